//! The git effect runner: writes the template history commits the templates handler predicted
//! (see `maestro_handlers::templates::history`) into a bare repository, and checks that libgit2
//! arrived at exactly the predicted commit id.

use git2::{Oid, Repository, Signature, Time, TreeBuilder};
use maestro_engine::effects::{EffectRunner, Ran};
use maestro_handlers::Intent;
use maestro_handlers::templates::history::{Commit, INTENT_KIND};
use maestro_schemas::record::hex;
use std::path::Path;

/// Regular file and directory modes, as git writes them.
const FILE_MODE: i32 = 0o100644;
const TREE_MODE: i32 = 0o040000;

/// The bare repository of template history.
pub struct GitHistory {
    repo: Repository,
}

impl std::fmt::Debug for GitHistory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitHistory").field("path", &self.repo.path()).finish()
    }
}

impl GitHistory {
    /// Opens the bare repository at `path`, creating it when missing.
    pub fn open(path: &Path) -> Result<GitHistory, git2::Error> {
        // The runner writes objects and reads back only the parent commit and two trees: a
        // cache of loaded objects (256 MiB by default) would only hold memory.
        git2::opts::enable_caching(false);
        let repo = match Repository::open_bare(path) {
            Ok(repo) => repo,
            Err(_) => Repository::init_bare(path)?,
        };
        Ok(GitHistory { repo })
    }

    /// The head commit of every tenant branch, by ref name.
    pub fn heads(&self) -> Result<Vec<(String, String)>, git2::Error> {
        let mut heads = Vec::new();
        for reference in self.repo.references_glob("refs/heads/tenants/*")? {
            let reference = reference?;
            if let (Some(name), Some(id)) = (reference.name().ok(), reference.target()) {
                heads.push((name.to_string(), id.to_string()));
            }
        }
        heads.sort();
        Ok(heads)
    }

    /// Writes one predicted commit. Already at the predicted id: nothing to do. At its parent:
    /// write it. Anywhere else: the repository and the log disagree, and that is an error.
    pub fn apply(&self, c: &Commit) -> Result<Ran, String> {
        let expected = Oid::from_bytes(&c.id).map_err(|e| e.to_string())?;
        let head = self.repo.refname_to_id(&c.ref_name).ok();
        if head == Some(expected) {
            return Ok(Ran::AlreadyDone);
        }
        let parent = c.parent.map(|p| Oid::from_bytes(&p)).transpose().map_err(|e| e.to_string())?;
        if head != parent {
            return Err(format!(
                "{} is at {}, the log expects {} next (after {}): the history repository does not match the log",
                c.ref_name,
                head.map_or("nothing".into(), |h| h.to_string()),
                hex(&c.id),
                parent.map_or("nothing".into(), |p| p.to_string()),
            ));
        }
        let id = self.write(c, parent).map_err(|e| format!("writing commit {}: {e}", hex(&c.id)))?;
        if id != expected {
            return Err(format!("libgit2 wrote commit {id}, the handler predicted {}", hex(&c.id)));
        }
        self.repo.reference(&c.ref_name, id, true, "maestro").map_err(|e| e.to_string())?;
        Ok(Ran::Done)
    }

    fn write(&self, c: &Commit, parent: Option<Oid>) -> Result<Oid, git2::Error> {
        let repo = &self.repo;
        let parent = parent.map(|p| repo.find_commit(p)).transpose()?;
        let root = parent.as_ref().map(|p| p.tree()).transpose()?;
        let shard = match root.as_ref().and_then(|r| r.get_name(&c.shard)) {
            Some(entry) => Some(repo.find_tree(entry.id())?),
            None => None,
        };
        let mut files: TreeBuilder<'_> = repo.treebuilder(shard.as_ref())?;
        match &c.blob {
            Some(bytes) => {
                files.insert(&c.file, repo.blob(bytes)?, FILE_MODE)?;
            }
            None if files.get(&c.file)?.is_some() => files.remove(&c.file)?,
            None => {}
        }
        let mut shards = repo.treebuilder(root.as_ref())?;
        if files.is_empty() {
            if shards.get(&c.shard)?.is_some() {
                shards.remove(&c.shard)?;
            }
        } else {
            shards.insert(&c.shard, files.write()?, TREE_MODE)?;
        }
        let tree = repo.find_tree(shards.write()?)?;
        let signature = Signature::new(&c.author, &c.email, &Time::new(c.time, 0))?;
        let parents: Vec<&git2::Commit<'_>> = parent.iter().collect();
        repo.commit(None, &signature, &signature, &c.message, &tree, &parents)
    }
}

impl EffectRunner for GitHistory {
    fn handles(&self, kind: &str) -> bool {
        kind == INTENT_KIND
    }

    fn run(&mut self, intent: &Intent) -> Result<Ran, String> {
        let commit: Commit = maestro_schemas::codec::decode(&intent.payload)
            .map_err(|e| format!("git intent {} does not decode: {e}", intent.id))?;
        self.apply(&commit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use maestro_handlers::contract::apply_changes;
    use maestro_handlers::templates::history::{FileChange, commit};
    use std::collections::BTreeMap;

    /// Awkward ids, users and contents: libgit2 must write exactly the commit the pure
    /// prediction named, every time.
    #[test]
    fn libgit2_writes_the_predicted_commits() {
        let tmp = tempfile::tempdir().unwrap();
        let git = GitHistory::open(&tmp.path().join("h.git")).unwrap();
        let mut state = BTreeMap::new();
        let ids = ["tpl-1", "a/b/../c", "naïve id with spaces", "", "x".repeat(256).leak(), "tpl-1", "%41"];
        let mut last = None;
        for (i, id) in ids.iter().enumerate() {
            let blob = (i % 3 != 2).then(|| format!("{{\"content\": \"v{i}\"}}\n").into_bytes());
            let change = FileChange {
                tenant: if i % 2 == 0 { "acme" } else { "we/ird tenant" },
                template_id: id,
                blob,
                user: " <mallory>\nname ",
                time_ms: 1_700_000_000_000 + i as u64 * 1_000,
                message: format!("change {i}\n\nrequest: r-{i}\n"),
            };
            let (predicted, changes) = commit(&state, change);
            apply_changes(&mut state, &changes);
            assert_eq!(git.apply(&predicted), Ok(Ran::Done), "commit {i}");
            assert_eq!(git.apply(&predicted), Ok(Ran::AlreadyDone), "a repeat is a no-op");
            last = Some(predicted);
        }
        assert_eq!(git.heads().unwrap().len(), 2, "one branch per tenant");
        // A commit whose parent is not the branch head is refused, naming both.
        let mut stray = last.unwrap();
        stray.parent = Some([7; 20]);
        stray.id = [8; 20];
        let error = git.apply(&stray).unwrap_err();
        assert!(error.contains("does not match the log"), "{error}");
    }
}
