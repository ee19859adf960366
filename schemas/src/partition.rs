//! Partitioned stream keys: the one place that names them and hashes an entry's partition key.
//!
//! Partition `p` of a logical stream key `K` is `{maestro:p<p>}:K`. The braces are a Redis
//! Cluster hash tag: Redis hashes only `maestro:p<p>`, so every stream of a partition (and the
//! guard, anchor and lease keys that will carry the same tag) lies in one slot, and a script
//! that writes a partition stays single-slot. The tag comes first, so it wins even when `K`
//! carries braces of its own (Redis hashes the first `{...}` of a key). With one partition the
//! key is `K` itself: today's keys, unchanged.

/// The prefix shared by every partition's keys (before `<p>}`).
pub const TAG_PREFIX: &str = "{maestro:p";

/// The key of partition `partition` of stream `key` when streams have `partitions` partitions.
pub fn partition_key(key: &str, partition: u32, partitions: u32) -> String {
    if partitions <= 1 {
        return key.to_string();
    }
    format!("{TAG_PREFIX}{partition}}}:{key}")
}

/// The partition of an entry whose partition key (tenant, orchestrator, execution id) is
/// `key`: the first eight bytes of the key's BLAKE3 hash, little-endian, modulo `partitions`.
/// A fixed function of the bytes, the same in every process and every build (never a
/// randomly seeded hasher); 0 with one partition.
pub fn partition_of(key: &[u8], partitions: u32) -> u32 {
    if partitions <= 1 {
        return 0;
    }
    let digest = blake3::hash(key);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest.as_bytes()[..8]);
    (u64::from_le_bytes(first) % u64::from(partitions)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_partition_is_todays_key() {
        assert_eq!(partition_key("maestro:streams:k8s:jobs", 0, 1), "maestro:streams:k8s:jobs");
        assert_eq!(partition_of(b"tenant-3", 1), 0);
    }

    #[test]
    fn partition_keys_carry_one_hash_tag_each() {
        assert_eq!(partition_key("maestro:streams:k8s:jobs", 3, 4), "{maestro:p3}:maestro:streams:k8s:jobs");
        assert_eq!(partition_key("{x}jobs", 0, 2), "{maestro:p0}:{x}jobs");
    }

    #[test]
    fn the_hash_is_fixed_and_spreads() {
        // Pinned: a change here would move every entry to another partition.
        assert_eq!(partition_of(b"tenant-0", 12), partition_of(b"tenant-0", 12));
        let pinned: Vec<u32> =
            ["tenant-0", "tenant-1", "acme"].iter().map(|k| partition_of(k.as_bytes(), 12)).collect();
        assert_eq!(pinned, PINNED.to_vec());
        let mut seen = [0u32; 4];
        for i in 0..400 {
            seen[partition_of(format!("tenant-{i}").as_bytes(), 4) as usize] += 1;
        }
        assert!(seen.iter().all(|n| (60..=140).contains(n)), "uneven: {seen:?}");
    }

    const PINNED: [u32; 3] = [9, 1, 11];
}
