"""The old Maestro services' models, written field for field from the wire contract."""
