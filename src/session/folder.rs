//! Where a session lives on disk, and how a save replaces it: at every instant the
//! folder holds the whole old session or the whole new one, and what sdlab does not
//! own (a user's notes, pictures, sub-folders) is kept.
//!
//! A save builds the new folder beside the old one, `.NAME.saving-PID-XXXXXX`: hard
//! links to everything else in the old folder, then sdlab's own files with
//! `session.json` last, each synced. `renameat2(RENAME_EXCHANGE)` swaps the two
//! folders in one step, and the old one is removed after anything that appeared in
//! it meanwhile is moved over. Where the filesystem cannot exchange, the old folder
//! is first renamed aside to `.NAME.old-PID-XXXXXX`; a reader that then finds no
//! session but such leftovers recovers the newest complete one ([`recover`]).

use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use super::store::{BRANCHES, SESSION_JSON};
use crate::fsutil::{limits, read_regular, sync_dir, write_atomic};
use crate::text::printable_line;

/// Room for the temporary names built from a session name (`.NAME.saving-PID-XXXXXX`)
/// within the 255 bytes a file name may have.
const MAX_NAME_BYTES: usize = 200;

/// `root/name`, refusing names that would land anywhere else: a session name is
/// one plain folder name (letters, digits, `-`, `_`, `.`, not starting with `.`).
pub fn session_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let plain =
        !name.is_empty() && !name.starts_with('.') && name.chars().all(|c| c.is_alphanumeric() || "-_.".contains(c));
    if !plain {
        bail!(
            "session name {:?}: expected a plain name (letters, digits, - _ .), which is saved under {}/; \
             use --dir to pick another folder",
            printable_line(name),
            root.display()
        );
    }
    if name.len() > MAX_NAME_BYTES {
        bail!("session name of {} bytes: expected at most {MAX_NAME_BYTES}", name.len());
    }
    Ok(root.join(name))
}

/// The folder of the run `target` names: `NAME` a session under `root`,
/// `NAME/BRANCH` one of that session's branches, any other path a folder where it is.
pub fn run_dir(root: &Path, target: &str) -> Result<PathBuf> {
    match target.split_once('/') {
        None => session_dir(root, target),
        Some((session, branch)) if !branch.contains('/') && root.join(session).join(SESSION_JSON).is_file() => {
            session_dir(&session_dir(root, session)?.join(BRANCHES), branch)
        }
        Some(_) => Ok(PathBuf::from(target)),
    }
}

/// Refuses to replace what is not ours to replace: a session without `force`, or
/// a folder (or file) that is not a session at all. `sdlab generate` calls it
/// before computing anything, so a name clash is found in a second, not after the run.
/// A session left only as the leftovers of an interrupted save is recovered first.
pub fn check_can_save(dir: &Path, force: bool) -> Result<()> {
    let recovered = recover(dir)?;
    if dir.exists() {
        let is_session = dir.join(SESSION_JSON).is_file();
        let is_empty = dir.read_dir().map(|mut d| d.next().is_none()).unwrap_or(false);
        if !dir.is_dir() || !(is_session || is_empty) {
            bail!("{}: exists and is not a session folder (no {SESSION_JSON}); refusing to replace it", dir.display());
        }
        if is_session && !force {
            let how = recovered.map(|note| format!(" ({note})")).unwrap_or_default();
            bail!("{}: a session is already saved here{how}; use --force to replace it", dir.display());
        }
    }
    Ok(())
}

/// Writes `files` (paths relative to `dir`, `session.json` last) as the session in
/// `dir`, keeping every other file there; see the module docs for how.
pub(super) fn write_folder(dir: &Path, files: &[(String, Vec<u8>)], force: bool) -> Result<()> {
    check_can_save(dir, force)?;
    // A link to a session folder stays a link: the save happens where it points.
    let dir = if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        fs::canonicalize(dir).with_context(|| format!("{}: cannot follow the link", dir.display()))?
    } else {
        dir.to_path_buf()
    };
    let (parent, name) = parent_and_name(&dir)?;
    fs::create_dir_all(parent).with_context(|| format!("{}: cannot create the folder", parent.display()))?;
    let staging = fresh_folder(parent, name, Leftover::Saving)?;
    let built = build(&dir, &staging, files);
    if let Err(e) = built {
        let _ = fs::remove_dir_all(&staging);
        return Err(e);
    }
    let old = if dir.exists() {
        Some(swap_in(&staging, &dir, parent, name)?)
    } else {
        fs::rename(&staging, &dir).map_err(|e| {
            let _ = fs::remove_dir_all(&staging);
            anyhow!("{}: cannot move the new session into place ({e})", dir.display())
        })?;
        None
    };
    if let Some(old) = old {
        move_late_arrivals(&old, &dir);
        // The copy loses its session.json first, so that a crash while removing it
        // never leaves what looks like a complete session to recover.
        let _ = fs::remove_file(old.join(SESSION_JSON));
        let _ = fs::remove_dir_all(&old);
    }
    sync_dir(parent)?;
    remove_leftovers(parent, name);
    Ok(())
}

/// The staging folder's content: hard links to what the user keeps in `dir`, then
/// sdlab's files.
fn build(dir: &Path, staging: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    if dir.is_dir() {
        let owned: Vec<&Path> = files.iter().map(|(rel, _)| Path::new(rel.as_str())).collect();
        link_tree(dir, staging, Path::new(""), &owned)?;
        let mode = fs::metadata(dir)?.permissions();
        fs::set_permissions(staging, mode).with_context(|| format!("{}: cannot keep its mode", dir.display()))?;
    }
    for (rel, bytes) in files {
        write_atomic(&staging.join(rel), bytes)?;
    }
    for sub in files.iter().filter_map(|(rel, _)| Path::new(rel).parent()).filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(&staging.join(sub))?;
    }
    sync_dir(staging)
}

/// Mirrors `from/rel` into `to/rel` without copying data: folders are made anew,
/// links copied as links, every other entry hard-linked (copied where a hard link
/// is refused), except the paths sdlab is about to write.
fn link_tree(from: &Path, to: &Path, rel: &Path, owned: &[&Path]) -> Result<()> {
    let src = from.join(rel);
    for entry in fs::read_dir(&src).with_context(|| format!("{}: cannot list the folder", src.display()))? {
        let entry = entry.with_context(|| format!("{}: cannot list the folder", src.display()))?;
        let rel = rel.join(entry.file_name());
        if owned.contains(&rel.as_path()) {
            continue;
        }
        let (a, b) = (from.join(&rel), to.join(&rel));
        let kind = entry.file_type().with_context(|| format!("{}: cannot read", a.display()))?;
        let kept = if kind.is_dir() {
            fs::create_dir(&b)
                .and_then(|()| fs::set_permissions(&b, fs::metadata(&a)?.permissions()))
                .map_err(anyhow::Error::from)
                .and_then(|()| link_tree(from, to, &rel, owned))
        } else if kind.is_symlink() {
            fs::read_link(&a).and_then(|target| std::os::unix::fs::symlink(target, &b)).map_err(Into::into)
        } else {
            fs::hard_link(&a, &b)
                .or_else(|e| if kind.is_file() { fs::copy(&a, &b).map(drop) } else { Err(e) })
                .map_err(Into::into)
        };
        kept.with_context(|| format!("{}: cannot keep it in the saved session", a.display()))?;
    }
    Ok(())
}

/// Puts `staging` at `dir` in one atomic exchange where the filesystem can, else
/// by moving `dir` aside first. Returns where the old folder now is.
fn swap_in(staging: &Path, dir: &Path, parent: &Path, name: &str) -> Result<PathBuf> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    match renameat_with(CWD, staging, CWD, dir, RenameFlags::EXCHANGE) {
        Ok(()) => return Ok(staging.to_path_buf()),
        Err(e) if ![rustix::io::Errno::INVAL, rustix::io::Errno::NOSYS, rustix::io::Errno::OPNOTSUPP].contains(&e) => {
            let _ = fs::remove_dir_all(staging);
            bail!("{}: cannot move the new session into place ({e})", dir.display());
        }
        Err(_) => {}
    }
    // rename(2) replaces an empty folder: the fresh one stands in for the name.
    let aside = fresh_folder(parent, name, Leftover::Old).inspect_err(|_| {
        let _ = fs::remove_dir_all(staging);
    })?;
    if let Err(e) = fs::rename(dir, &aside) {
        let _ = fs::remove_dir_all(staging);
        bail!("{}: cannot move the old session aside ({e})", dir.display());
    }
    if let Err(e) = fs::rename(staging, dir) {
        let _ = fs::rename(&aside, dir);
        let _ = fs::remove_dir_all(staging);
        bail!("{}: cannot move the new session into place ({e})", dir.display());
    }
    Ok(aside)
}

/// Whatever was added to the old folder while the new one was built (a note saved
/// at that moment) moves into the new one rather than being removed with the old.
fn move_late_arrivals(old: &Path, new: &Path) {
    let Ok(entries) = fs::read_dir(old) else { return };
    for entry in entries.flatten() {
        let (a, b) = (entry.path(), new.join(entry.file_name()));
        match fs::symlink_metadata(&b) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let _ = fs::rename(&a, &b);
            }
            Ok(meta) if meta.is_dir() && entry.file_type().is_ok_and(|t| t.is_dir()) => move_late_arrivals(&a, &b),
            _ => {}
        }
    }
}

/// The two kinds of folder a save leaves beside the session while it runs.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Leftover {
    Saving,
    Old,
}

impl Leftover {
    fn tag(self) -> &'static str {
        match self {
            Leftover::Saving => "saving",
            Leftover::Old => "old",
        }
    }
}

/// A new empty folder `.NAME.TAG-PID-XXXXXX` in `parent`: the PID tells a save in
/// progress from the leftover of a killed one.
fn fresh_folder(parent: &Path, name: &str, kind: Leftover) -> Result<PathBuf> {
    let dir = tempfile::Builder::new()
        .prefix(&format!(".{name}.{}-{}-", kind.tag(), std::process::id()))
        .rand_bytes(6)
        .tempdir_in(parent)
        .with_context(|| format!("{}: cannot create a temporary folder", parent.display()))?;
    Ok(dir.keep())
}

/// A leftover of a save of `name` in `parent`: its path, kind, and whether the
/// process that made it still runs (then it is a save in progress, not a leftover).
struct Found {
    path: PathBuf,
    alive: bool,
}

/// `.NAME.saving-PID-XXXXXX` / `.NAME.old-PID-XXXXXX`, and the PID-less names older
/// sdlabs used (`.NAME.saving-XXXXXX`).
fn leftovers(parent: &Path, name: &str) -> Vec<Found> {
    let Ok(entries) = fs::read_dir(parent) else { return Vec::new() };
    let plain = |s: &str| s.len() == 6 && s.bytes().all(|b| b.is_ascii_alphanumeric());
    entries
        .flatten()
        .filter_map(|entry| {
            let file_name = entry.file_name();
            let file_name = file_name.to_str()?;
            let rest = [Leftover::Saving, Leftover::Old]
                .iter()
                .find_map(|kind| file_name.strip_prefix(&format!(".{name}.{}-", kind.tag())))?;
            let alive = match rest.split_once('-') {
                Some((pid, tail)) if plain(tail) && !pid.is_empty() && pid.bytes().all(|b| b.is_ascii_digit()) => {
                    Path::new("/proc").join(pid).exists()
                }
                None if plain(rest) => false,
                _ => return None,
            };
            Some(Found { path: entry.path(), alive })
        })
        .collect()
}

/// After a successful save, the leftovers of interrupted earlier ones go.
fn remove_leftovers(parent: &Path, name: &str) {
    for found in leftovers(parent, name).into_iter().filter(|f| !f.alive) {
        let _ = fs::remove_file(found.path.join(SESSION_JSON));
        let _ = fs::remove_dir_all(&found.path);
    }
}

/// When `dir` holds no session but an interrupted save left complete copies beside
/// it (a copy is complete when it has `session.json`, written last), moves the
/// newest back into place. Returns what was done, for the user to be told.
pub fn recover(dir: &Path) -> Result<Option<String>> {
    if dir.join(SESSION_JSON).is_file() {
        return Ok(None);
    }
    let Ok((parent, name)) = parent_and_name(dir) else { return Ok(None) };
    let newest = leftovers(parent, name)
        .into_iter()
        .filter(|f| !f.alive && f.path.join(SESSION_JSON).is_file())
        .map(|f| (saved_at(&f.path), f.path))
        .max();
    let Some((saved, found)) = newest else { return Ok(None) };
    if dir.exists() {
        // Only an empty folder may be replaced; anything else is the user's.
        if fs::remove_dir(dir).is_err() {
            return Ok(None);
        }
    }
    fs::rename(&found, dir)
        .with_context(|| format!("{}: cannot recover it from {}", dir.display(), found.display()))?;
    sync_dir(parent)?;
    let from = found.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    Ok(Some(format!("{}: recovered the session saved {saved} from an interrupted save ({from})", dir.display(),)))
}

/// [`recover`] for every session under `root` that is only leftovers: what was
/// recovered, or why it could not be.
pub fn recover_all(root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(root) else { return Vec::new() };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let file_name = e.file_name().into_string().ok()?;
            let hidden = file_name.strip_prefix('.')?;
            let at = hidden.rfind(".saving-").or_else(|| hidden.rfind(".old-"))?;
            Some(hidden[..at].to_string())
        })
        .filter(|name| !name.is_empty() && !root.join(name).join(SESSION_JSON).is_file())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| match recover(&root.join(&name)) {
            Ok(note) => note,
            Err(e) => Some(format!("{e:#}")),
        })
        .collect()
}

/// When the copy in `dir` was saved, from its `session.json` (`saved` is RFC 3339,
/// so it sorts as text).
fn saved_at(dir: &Path) -> String {
    read_regular(&dir.join(SESSION_JSON), limits::SESSION_JSON)
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|v| v.get("saved").and_then(Value::as_str).map(printable_line))
        .unwrap_or_else(|| "at an unknown time".into())
}

fn parent_and_name(dir: &Path) -> Result<(&Path, &str)> {
    let name =
        dir.file_name().and_then(|n| n.to_str()).ok_or_else(|| anyhow!("{}: not a folder name", dir.display()))?;
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((parent, name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_sessions_folder() {
        let root = Path::new("sessions");
        assert_eq!(session_dir(root, "fox-1").unwrap(), root.join("fox-1"));
        for bad in ["../x", "/abs", "a/b", "..", ".", ".hidden", "", "a\\b"] {
            let msg = session_dir(root, bad).unwrap_err().to_string();
            assert!(msg.starts_with(&format!("session name {bad:?}: expected a plain name")), "{msg}");
        }
        let long = "a".repeat(241);
        assert_eq!(
            session_dir(root, &long).unwrap_err().to_string(),
            "session name of 241 bytes: expected at most 200"
        );
        let hostile = session_dir(root, "x\x1b[2J").unwrap_err().to_string();
        assert!(hostile.starts_with("session name \"x^[[2J\""), "{hostile}");
    }

    fn names_in(dir: &Path) -> Vec<String> {
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect()
    }

    fn save(dir: &Path, json: &str) {
        let files =
            [("tensors.safetensors".to_string(), b"t".to_vec()), (SESSION_JSON.to_string(), json.as_bytes().to_vec())];
        write_folder(dir, &files, true).unwrap();
    }

    #[test]
    fn a_save_keeps_what_the_user_put_in_the_folder() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("k");
        save(&dir, r#"{"saved": "1"}"#);
        fs::write(dir.join("notes.txt"), "mine").unwrap();
        fs::create_dir_all(dir.join("images/sub")).unwrap();
        fs::write(dir.join("images/mine.png"), "png").unwrap();
        fs::write(dir.join("images/sub/deep.txt"), "deep").unwrap();
        std::os::unix::fs::symlink("notes.txt", dir.join("link")).unwrap();
        save(&dir, r#"{"saved": "2"}"#);
        assert_eq!(fs::read_to_string(dir.join(SESSION_JSON)).unwrap(), r#"{"saved": "2"}"#);
        assert_eq!(fs::read_to_string(dir.join("notes.txt")).unwrap(), "mine");
        assert_eq!(fs::read_to_string(dir.join("images/mine.png")).unwrap(), "png");
        assert_eq!(fs::read_to_string(dir.join("images/sub/deep.txt")).unwrap(), "deep");
        assert_eq!(fs::read_link(dir.join("link")).unwrap(), Path::new("notes.txt"));
        assert_eq!(names_in(root.path()), vec!["k"], "no temporary folder is left");
    }

    #[test]
    fn leftovers_of_a_killed_save_are_recovered_then_cleaned_up() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("k");
        // What a save killed between its two renames left (no process has PID 999999999;
        // an older sdlab's name has no PID at all).
        for (leftover, saved) in
            [(".k.old-999999999-abc123", "2026-01-01T00:00:00Z"), (".k.saving-zz9x8y", "2026-01-02T00:00:00Z")]
        {
            let path = root.path().join(leftover);
            fs::create_dir(&path).unwrap();
            fs::write(path.join(SESSION_JSON), format!(r#"{{"saved": "{saved}"}}"#)).unwrap();
        }
        let half = root.path().join(".k.saving-999999998-qqqqqq");
        fs::create_dir(&half).unwrap();
        fs::write(half.join("tensors.safetensors"), "no session.json: incomplete").unwrap();
        let msg = check_can_save(&dir, false).unwrap_err().to_string();
        assert!(msg.contains("a session is already saved here"), "{msg}");
        assert!(
            msg.contains(
                "recovered the session saved 2026-01-02T00:00:00Z from an interrupted save (.k.saving-zz9x8y)"
            ),
            "{msg}"
        );
        assert!(fs::read_to_string(dir.join(SESSION_JSON)).unwrap().contains("2026-01-02"));
        assert_eq!(recover(&dir).unwrap(), None, "nothing more to do once a session is in place");
        save(&dir, r#"{"saved": "3"}"#);
        assert_eq!(names_in(root.path()), vec!["k"], "the next save cleans up");
    }

    #[test]
    fn a_running_save_is_neither_recovered_nor_removed() {
        let root = tempfile::tempdir().unwrap();
        let running = root.path().join(format!(".k.saving-{}-abcdef", std::process::id()));
        fs::create_dir(&running).unwrap();
        fs::write(running.join(SESSION_JSON), "{}").unwrap();
        assert_eq!(recover(&root.path().join("k")).unwrap(), None);
        save(&root.path().join("k"), "{}");
        assert!(running.is_dir());
    }
}
