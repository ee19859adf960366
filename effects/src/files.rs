//! The file-read effect runner: reads one file under a root directory, read-only, and reports
//! its text, or why it was not read, as a fact the engine publishes and then reads back like any
//! producer's entry. Handlers that need a file's text (the healing handler, for heal requests
//! that name a test file but do not carry it) get it from the log, never from the disk, so a
//! replay reads nothing.
//!
//! Intent `read_file`, payload `{root, path, max_bytes, reply_stream, reply_fields}`: the fact
//! is `reply_fields` plus `fact_id` (the intent id) and either `source` (the text) or
//! `refused` (the reason), XADDed onto `reply_stream`. The file must resolve (symlinks and `..`
//! followed) to a regular file under the canonical root, be at most `max_bytes` long and be
//! UTF-8.

use maestro_engine::effects::{EffectRunner, Fact, Ran};
use maestro_handlers::Intent;
use serde::Deserialize;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use tokio::sync::mpsc::UnboundedSender;

/// The intent kind this runner takes.
pub const KIND: &str = "read_file";

/// What a `read_file` intent asks for.
#[derive(Debug, Deserialize)]
struct ReadFile {
    root: String,
    path: String,
    max_bytes: u64,
    reply_stream: String,
    reply_fields: Vec<(String, String)>,
}

/// The runner: where its facts go.
#[derive(Debug, Clone)]
pub struct FileReader {
    pub facts: UnboundedSender<Fact>,
}

impl EffectRunner for FileReader {
    fn handles(&self, kind: &str) -> bool {
        kind == KIND
    }

    fn run(&mut self, intent: &Intent) -> Result<Ran, String> {
        let ask: ReadFile =
            serde_json::from_slice(&intent.payload).map_err(|e| format!("intent {}: payload: {e}", intent.id))?;
        let mut fields = ask.reply_fields.clone();
        fields.push(("fact_id".into(), intent.id.clone()));
        match read_under(Path::new(&ask.root), &ask.path, ask.max_bytes) {
            Ok(text) => fields.push(("source".into(), text)),
            Err(reason) => {
                tracing::info!(root = ask.root, path = ask.path, reason, "file read refused");
                fields.push(("refused".into(), reason));
            }
        }
        // In flight until the fact is published: a crash before that reads the file again.
        let finishes = Some(intent.id.clone());
        let _ = self.facts.send(Fact { stream: ask.reply_stream, fields, finishes });
        Ok(Ran::Started)
    }
}

/// `path` with `.` dropped and `..` applied, without touching the disk.
fn lexical(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Reads `path` (absolute, or relative to `root`) when it is a regular UTF-8 file of at most
/// `max_bytes` under `root`; otherwise says why not.
pub fn read_under(root: &Path, path: &str, max_bytes: u64) -> Result<String, String> {
    let canonical_root =
        std::fs::canonicalize(root).map_err(|e| format!("the project {} cannot be opened: {e}", root.display()))?;
    let asked = Path::new(path);
    let joined = if asked.is_absolute() { asked.to_path_buf() } else { root.join(asked) };
    let spelled = lexical(&joined);
    let under_by_name = spelled.starts_with(lexical(root)) || spelled.starts_with(&canonical_root);
    if !under_by_name {
        return Err(format!("{path} escapes the project {}", root.display()));
    }
    let target = match std::fs::canonicalize(&joined) {
        Ok(target) => target,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(format!("{path} does not exist in the project {}", root.display()));
        }
        Err(e) => return Err(format!("{path} cannot be resolved: {e}")),
    };
    if !target.starts_with(&canonical_root) {
        return Err(format!(
            "{path} is a symlink that leads out of the project {} (to {})",
            root.display(),
            target.display()
        ));
    }
    let meta = std::fs::metadata(&target).map_err(|e| format!("{path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!("{path} is not a regular file"));
    }
    if meta.len() > max_bytes {
        return Err(format!("{path} is {} bytes, over the limit of {max_bytes} bytes", meta.len()));
    }
    let file = std::fs::File::open(&target).map_err(|e| format!("{path} cannot be opened: {e}"))?;
    let mut bytes = Vec::new();
    // The file may have grown since its size was read.
    file.take(max_bytes.saturating_add(1)).read_to_end(&mut bytes).map_err(|e| format!("{path}: {e}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(format!("{path} is over the limit of {max_bytes} bytes"));
    }
    String::from_utf8(bytes).map_err(|_| format!("{path} is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn reads_inside_and_refuses_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir_all(project.join("tests")).unwrap();
        std::fs::write(project.join("tests/test_a.py"), "def test_a():\n    assert 1 == 1\n").unwrap();
        std::fs::write(dir.path().join("secret.txt"), "outside").unwrap();
        std::os::unix::fs::symlink(dir.path().join("secret.txt"), project.join("tests/link.py")).unwrap();
        std::fs::write(project.join("big.py"), vec![b'#'; 2048]).unwrap();
        std::fs::write(project.join("bin.py"), [0xff, 0xfe, 0x00]).unwrap();
        let absolute = project.join("tests/test_a.py");
        assert!(read_under(&project, "tests/test_a.py", 1024).unwrap().starts_with("def test_a"));
        assert!(read_under(&project, absolute.to_str().unwrap(), 1024).is_ok());
        let refused = |path: &str| read_under(&project, path, 1024).unwrap_err();
        assert!(refused("../secret.txt").contains("escapes the project"));
        assert!(refused("tests/../../secret.txt").contains("escapes the project"));
        assert!(refused(dir.path().join("secret.txt").to_str().unwrap()).contains("escapes the project"));
        assert!(refused("tests/link.py").contains("symlink that leads out of the project"));
        assert!(refused("tests/missing.py").contains("does not exist"));
        assert!(refused("big.py").contains("over the limit of 1024 bytes"));
        assert!(refused("bin.py").contains("not UTF-8"));
        assert!(refused("tests").contains("not a regular file"));
    }
}
