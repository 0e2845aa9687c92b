//! Globs as kinetail matches them: the match options and the static part
//! of a pattern (discovery watches it; configuration checks reach).

use std::path::{Path, PathBuf};

/// How globs match paths: `*` and `?` stay within a directory, `**`
/// crosses them; names starting with a dot are matched like others.
pub const MATCH_OPTIONS: glob::MatchOptions = glob::MatchOptions {
    case_sensitive: true,
    require_literal_separator: true,
    require_literal_leading_dot: false,
};

pub fn is_glob_meta(c: char) -> bool {
    matches!(c, '*' | '?' | '[' | ']')
}

/// The static part of a glob: the longest leading directory without
/// wildcards. Discovery watches it for notify hints.
pub fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::from("/");
    for comp in Path::new(pattern).components().skip(1) {
        let c = comp.as_os_str().to_string_lossy();
        if c.chars().any(is_glob_meta) {
            break;
        }
        base.push(comp);
    }
    // The last component is the file name pattern unless it had wildcards.
    if base == Path::new(pattern) {
        base.pop();
    }
    base
}

/// Which symbolic links under a flow's globs are followed
/// (`follow_symlinks`): a link is a place where someone else decides what
/// kinetail reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowSymlinks {
    /// A link whose owner and whose target's owner are both root or
    /// kinetail's own user, in a directory not everyone may write.
    Owned,
    /// Every link (loops and repeats are still walked once).
    Always,
    /// No link.
    Never,
}

/// What a walk of one pattern finds: regular files and links to them that
/// the policy lets through, and why other matches are not read.
#[derive(Debug, Default)]
pub struct Found {
    pub files: Vec<PathBuf>,
    pub problems: Vec<(PathBuf, String)>,
}

/// Expands `pattern` by walking the directories under its static part,
/// matching component by component (`**` spans directories; names that
/// are not UTF-8 are matched with their invalid bytes as U+FFFD), and
/// following links by `follow`. A directory is walked once per pattern,
/// by device and inode, however many links lead to it, so a link loop
/// ends. Entries that are neither files nor directories are reported.
pub fn walk(pattern: &str, follow: FollowSymlinks) -> Found {
    let base = glob_base(pattern);
    let rest: Vec<String> = Path::new(pattern)
        .strip_prefix(&base)
        .map(|r| {
            r.components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    let mut w = Walker {
        follow,
        me: rustix::process::geteuid().as_raw(),
        seen: std::collections::HashSet::new(),
        found: Found::default(),
    };
    let comps: Vec<Comp> = rest.iter().map(|c| Comp::new(c)).collect();
    if comps.is_empty() {
        return w.found;
    }
    if let Ok(m) = std::fs::metadata(&base) {
        w.descend(&base, &m, &comps);
    }
    w.found
}

use std::os::unix::fs::MetadataExt;

enum Comp {
    Any,
    Name(Option<glob::Pattern>),
}

impl Comp {
    fn new(c: &str) -> Comp {
        if c == "**" {
            Comp::Any
        } else {
            Comp::Name(glob::Pattern::new(c).ok())
        }
    }

    fn matches(&self, name: &str) -> bool {
        match self {
            Comp::Any => true,
            Comp::Name(p) => p
                .as_ref()
                .is_some_and(|p| p.matches_with(name, MATCH_OPTIONS)),
        }
    }
}

struct Walker {
    follow: FollowSymlinks,
    me: u32,
    /// Directories walked, by device and inode and how much of the
    /// pattern was left there.
    seen: std::collections::HashSet<(u64, u64, usize)>,
    found: Found,
}

impl Walker {
    /// Matches the entries of `dir` against `comps` (not empty).
    fn dir(&mut self, dir: &Path, comps: &[Comp]) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        let dir_meta = std::fs::metadata(dir).ok();
        for e in entries.flatten() {
            let path = e.path();
            let name = e.file_name();
            let name = name.to_string_lossy();
            let Ok(kind) = e.file_type() else { continue };
            let meta = if kind.is_symlink() {
                match self.link(&path, dir_meta.as_ref()) {
                    Ok(m) => m,
                    Err(why) => {
                        if self.could_match(&name, comps) {
                            self.found.problems.push((path, why));
                        }
                        continue;
                    }
                }
            } else {
                match e.metadata() {
                    Ok(m) => m,
                    Err(_) => continue,
                }
            };
            self.entry(&path, &name, &meta, comps);
        }
    }

    /// Whether a name could match here (as a file or a directory on the
    /// way), to report only links the globs would have read.
    fn could_match(&self, name: &str, comps: &[Comp]) -> bool {
        comps.iter().take(2).any(|c| c.matches(name))
    }

    /// Matches one entry (a link already resolved) against `comps`.
    fn entry(&mut self, path: &Path, name: &str, meta: &std::fs::Metadata, comps: &[Comp]) {
        let (first, more) = (&comps[0], &comps[1..]);
        match first {
            Comp::Any => {
                // `**` as no directory at all...
                if more.is_empty() {
                    self.file(path, meta);
                } else {
                    self.entry(path, name, meta, more);
                }
                // ...or as this directory and maybe more below.
                if meta.is_dir() {
                    self.descend(path, meta, comps);
                }
            }
            Comp::Name(_) => {
                if !first.matches(name) {
                    return;
                }
                if more.is_empty() {
                    self.file(path, meta);
                } else if meta.is_dir() {
                    self.descend(path, meta, more);
                }
            }
        }
    }

    /// A match of the pattern's last component.
    fn file(&mut self, path: &Path, meta: &std::fs::Metadata) {
        if meta.is_file() {
            self.found.files.push(path.to_path_buf());
        } else if !meta.is_dir() {
            self.found
                .problems
                .push((path.to_path_buf(), "not a regular file; skipped".into()));
        }
    }

    /// Walks a directory with what is left of the pattern, once per
    /// directory (by device and inode) and place in the pattern.
    fn descend(&mut self, path: &Path, meta: &std::fs::Metadata, comps: &[Comp]) {
        if self.seen.insert((meta.dev(), meta.ino(), comps.len())) {
            self.dir(path, comps);
        }
    }

    /// The metadata of what the link at `path` leads to, if the policy
    /// lets kinetail follow it; otherwise why not.
    fn link(
        &self,
        path: &Path,
        dir: Option<&std::fs::Metadata>,
    ) -> Result<std::fs::Metadata, String> {
        let target = std::fs::metadata(path)
            .map_err(|e| format!("a symbolic link that leads nowhere ({e}); skipped"))?;
        match self.follow {
            FollowSymlinks::Always => Ok(target),
            FollowSymlinks::Never => {
                Err("a symbolic link; not followed (follow_symlinks = \"never\")".into())
            }
            FollowSymlinks::Owned => {
                let link = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
                let trusted = |uid: u32| uid == 0 || uid == self.me;
                if !trusted(link.uid()) || !trusted(target.uid()) {
                    return Err(format!(
                        "a symbolic link owned by user {} to something of user {}; kinetail follows links only when both belong to root or to its own user (follow_symlinks = \"owned\"; \"always\" follows every link)",
                        link.uid(),
                        target.uid()
                    ));
                }
                if dir.is_some_and(|d| d.mode() & 0o002 != 0) {
                    return Err("a symbolic link in a directory everyone may write; not followed (follow_symlinks = \"owned\")".into());
                }
                Ok(target)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        use std::os::unix::ffi::OsStrExt;
        let t = tempfile::tempdir().unwrap();
        let a = t.path();
        std::fs::create_dir_all(a.join("b/c")).unwrap();
        for f in ["x.log", "b/y.log", "b/c/z.log", "b/c/skip.txt"] {
            std::fs::write(a.join(f), b"1\n").unwrap();
        }
        let odd = std::ffi::OsStr::from_bytes(b"caf\xe9.log");
        std::fs::write(a.join("b").join(odd), b"1\n").unwrap();
        // A loop, and a second way to the same directory.
        std::os::unix::fs::symlink(".", a.join("b/loop")).unwrap();
        std::os::unix::fs::symlink(a.join("b/c"), a.join("again")).unwrap();
        t
    }

    fn names(found: &Found, root: &Path) -> Vec<String> {
        let mut v: Vec<String> = found
            .files
            .iter()
            .map(|p| p.strip_prefix(root).unwrap().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn a_walk_matches_double_stars_and_odd_names_and_ends_on_link_loops() {
        let t = tree();
        let root = t.path();
        let pattern = format!("{}/**/*.log", root.display());
        let found = walk(&pattern, FollowSymlinks::Always);
        let got = names(&found, root);
        // Every file once per path that names it; the loop adds nothing
        // (its directory was walked), the second way to b/c adds its name.
        assert!(got.contains(&"x.log".to_string()), "{got:?}");
        assert!(got.contains(&"b/y.log".to_string()), "{got:?}");
        assert!(got.contains(&"b/c/z.log".to_string()), "{got:?}");
        assert!(got.contains(&"b/caf\u{fffd}.log".to_string()), "{got:?}");
        assert!(got.len() <= 6, "{got:?}");
        assert!(!got.iter().any(|n| n.ends_with("skip.txt")));
        // A pattern with a directory after `**`.
        let found = walk(
            &format!("{}/**/c/*.log", root.display()),
            FollowSymlinks::Always,
        );
        assert!(names(&found, root).contains(&"b/c/z.log".to_string()));
        // One level only without `**`.
        let found = walk(&format!("{}/*.log", root.display()), FollowSymlinks::Always);
        assert_eq!(names(&found, root), vec!["x.log"]);
    }

    #[test]
    fn links_are_followed_by_the_flow_policy() {
        let t = tree();
        let root = t.path();
        let pattern = format!("{}/**/*.log", root.display());
        let never = walk(&pattern, FollowSymlinks::Never);
        assert_eq!(
            names(&never, root),
            vec!["b/c/z.log", "b/caf\u{fffd}.log", "b/y.log", "x.log"]
        );
        // Links of this user to its own files are followed under "owned".
        std::os::unix::fs::symlink(root.join("b/y.log"), root.join("ylink.log")).unwrap();
        let owned = walk(&pattern, FollowSymlinks::Owned);
        assert!(names(&owned, root).contains(&"ylink.log".to_string()));
        let never = walk(&pattern, FollowSymlinks::Never);
        assert!(!names(&never, root).contains(&"ylink.log".to_string()));
        // A link a neighbour owns is not (as root the test can make one).
        let theirs = root.join("theirs.log");
        std::os::unix::fs::symlink(root.join("x.log"), &theirs).unwrap();
        let chowned = std::process::Command::new("chown")
            .args(["-h", "65534:65534"])
            .arg(&theirs)
            .status()
            .is_ok_and(|s| s.success());
        if chowned {
            let owned = walk(&pattern, FollowSymlinks::Owned);
            assert!(!names(&owned, root).contains(&"theirs.log".to_string()));
            assert!(
                owned
                    .problems
                    .iter()
                    .any(|(p, why)| p == &theirs && why.contains("owned by user 65534")),
                "{:?}",
                owned.problems
            );
            let always = walk(&pattern, FollowSymlinks::Always);
            assert!(names(&always, root).contains(&"theirs.log".to_string()));
        }
    }

    #[test]
    fn glob_base_is_the_static_prefix() {
        assert_eq!(glob_base("/var/log/*.log"), PathBuf::from("/var/log"));
        assert_eq!(
            glob_base("/var/log/app/**/*.json"),
            PathBuf::from("/var/log/app")
        );
        assert_eq!(glob_base("/var/*/x.log"), PathBuf::from("/var"));
        assert_eq!(glob_base("/var/log/syslog"), PathBuf::from("/var/log"));
    }
}
