//! The Python tools the tests run (kubernetes-validate, pydantic, redis-py), installed by the
//! tests themselves: a virtual environment under the target directory, built on first use from
//! `tests/python/requirements.txt` and reused while that file is unchanged.
//!
//! A stamp holding the requirements' hash is written only after `pip install` succeeded, so an
//! environment without a matching stamp (killed mid-install, or built from other requirements)
//! is removed and built again, never used. Test binaries run in parallel: a file lock beside the
//! environment lets exactly one of them build it while the others wait.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const STAMP: &str = "maestro-requirements.stamp";

/// A built virtual environment.
#[derive(Debug, Clone)]
pub struct PythonEnv {
    root: PathBuf,
}

impl PythonEnv {
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// An executable of the environment (`python`, `kubernetes-validate`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.root.join("bin").join(name)
    }

    /// Runs a Python script with the environment's interpreter.
    pub fn run_script(&self, script: &Path, args: &[&str]) -> Output {
        Command::new(self.bin("python"))
            .arg(script)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin("python").display()))
    }
}

/// The requirements file the tests' environment is built from.
pub fn requirements() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/requirements.txt")
}

/// The tests' shared environment under the target directory; a test that cannot have it fails
/// with one line naming what is missing and the command that provides it.
pub fn python_env() -> PythonEnv {
    static ENV: OnceLock<Result<PythonEnv, String>> = OnceLock::new();
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("python-env");
    ENV.get_or_init(|| ensure_env("python3", &requirements(), &dir)).clone().unwrap_or_else(|e| panic!("{e}"))
}

/// Builds the environment at `dir` from `requirements` with interpreter `python`, unless a
/// complete one built from the same requirements is there already.
pub fn ensure_env(python: &str, requirements: &Path, dir: &Path) -> Result<PythonEnv, String> {
    let wanted = requirements_hash(requirements)?;
    let env = PythonEnv { root: dir.to_path_buf() };
    if let Some(parent) = dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let lock_path = dir.with_extension("lock");
    let lock = File::create(&lock_path).map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    lock.lock().map_err(|e| format!("cannot lock {}: {e}", lock_path.display()))?;
    if std::fs::read_to_string(dir.join(STAMP)).ok().as_deref() == Some(wanted.as_str()) {
        return Ok(env);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).map_err(|e| format!("cannot remove the stale {}: {e}", dir.display()))?;
    }
    build(python, requirements, dir)?;
    let stamp = dir.join(STAMP);
    std::fs::write(stamp.with_extension("tmp"), &wanted)
        .and_then(|()| std::fs::rename(stamp.with_extension("tmp"), &stamp))
        .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(env)
}

fn requirements_hash(requirements: &Path) -> Result<String, String> {
    let text = std::fs::read(requirements).map_err(|e| format!("cannot read {}: {e}", requirements.display()))?;
    Ok(blake3::hash(&text).to_hex().to_string())
}

fn build(python: &str, requirements: &Path, dir: &Path) -> Result<(), String> {
    let venv = Command::new(python).args(["-m", "venv"]).arg(dir).output().map_err(|e| {
        format!("{python} not found ({e}): the tests need it to build their Python tools; install it with `apt-get install -y python3 python3-venv`")
    })?;
    if !venv.status.success() {
        return Err(format!(
            "`{python} -m venv {}` failed: install the venv module with `apt-get install -y python3-venv`; it said: {}",
            dir.display(),
            tail(&venv.stderr)
        ));
    }
    let pip = Command::new(dir.join("bin/python"))
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(requirements)
        .output()
        .map_err(|e| format!("cannot run the new environment's python: {e}"))?;
    if !pip.status.success() {
        return Err(format!(
            "pip could not install {} (the first test run needs PyPI once; try `{}/bin/python -m pip install -r {}` to see why): {}",
            requirements.display(),
            dir.display(),
            requirements.display(),
            tail(&pip.stderr)
        ));
    }
    Ok(())
}

fn tail(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().rev().take(3).collect();
    lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

/// Runs `kubernetes-validate -k 1.33.0 --strict` on files: (success, stdout, stderr).
pub fn kubernetes_validate(files: &[PathBuf]) -> (bool, String, String) {
    let tool = python_env().bin("kubernetes-validate");
    let output = Command::new(&tool).args(["-k", "1.33.0", "--strict"]).args(files).output();
    let output = output.unwrap_or_else(|e| panic!("cannot run {}: {e}", tool.display()));
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (output.status.success(), text(&output.stdout), text(&output.stderr))
}

/// Runs the conformance script `tests/python/conformance/<name>.py` with the environment's
/// interpreter; fails the test, showing the script's output and `context()` (the engine's
/// log), unless it exits 0 having failed no check and passed at least `floor` (a run that
/// checks less has lost coverage). Returns the script's stdout.
pub fn conformance(name: &str, args: &[&str], floor: u64, context: impl Fn() -> String) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/python/conformance/{name}.py"));
    let output = python_env().run_script(&script, args);
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the old clients failed:\n{stdout}\n{stderr}\nengine:\n{}", context());
    let summary: serde_json::Value =
        stdout.lines().last().and_then(|l| serde_json::from_str(l).ok()).unwrap_or_default();
    let passed = summary["passed"].as_u64().unwrap_or(0);
    assert_eq!(summary["failed"], 0, "{stdout}");
    assert!(passed >= floor, "only {passed} checks passed (floor {floor}):\n{stdout}");
    eprintln!("{name} conformance: {passed} checks passed");
    stdout
}
