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

#[cfg(test)]
mod tests {
    use super::*;

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
