//! registries.conf (containers-registries.conf(5), version 2, with the version 1 tables still
//! understood) and its drop-in directories (containers-registries.conf.d(5)).
//!
//! Files read, as containers/image does:
//! 1. the main file: the caller's path, else `$CONTAINERS_REGISTRIES_CONF`, else
//!    `$HOME/.config/containers/registries.conf` if it exists, else
//!    `/etc/containers/registries.conf` (a missing default file is an empty configuration);
//! 2. drop-ins (`*.conf`, in name order): the caller's directory only, when given; else
//!    `$HOME/.config/containers/registries.conf.d` when the main file is the user's; else
//!    `/etc/containers/registries.conf.d` then `$HOME/.config/containers/registries.conf.d`.
//!
//! A later file replaces the global settings it sets, replaces a `[[registry]]` table with
//! the same prefix, and adds or replaces (an empty value: removes) aliases.

use crate::error::{Error, Result, Status};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const SYSTEM_FILE: &str = "/etc/containers/registries.conf";
pub const SYSTEM_DROP_IN_DIR: &str = "/etc/containers/registries.conf.d";
/// The `credential-helpers` value that stands for the auth files of containers-auth.json(5).
pub const AUTH_FILES_HELPER: &str = "containers-auth.json";

/// How a short name that no alias covers is resolved when several search registries exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ShortNameMode {
    /// Ambiguity is an error (a library cannot prompt).
    Enforcing,
    /// Try every search registry in order (the default when the files say nothing).
    #[default]
    Permissive,
    /// Try every search registry in order.
    Disabled,
}

/// When a mirror is used (`pull-from-mirror`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullFromMirror {
    #[default]
    All,
    DigestOnly,
    TagOnly,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port][/path]`, no scheme, no trailing '/'.
    pub location: String,
    pub insecure: bool,
    pub pull_from_mirror: PullFromMirror,
}

/// One `[[registry]]` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// `host[:port][/namespace…][/repo][:tag|@digest]` or `*.domain`.
    pub prefix: String,
    /// Where the prefix-rooted namespace really is; empty only for a wildcard prefix (no rewrite).
    pub location: String,
    pub insecure: bool,
    pub blocked: bool,
    pub mirror_by_digest_only: bool,
    pub mirrors: Vec<Mirror>,
    /// The file that defined it, for messages.
    pub origin: PathBuf,
}

/// Everything the files say, merged.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RegistriesConf {
    /// None when no file sets `unqualified-search-registries` (then short names mean
    /// docker.io, as Docker does); Some(empty) when a file sets it to an empty list.
    pub unqualified_search_registries: Option<Vec<String>>,
    pub short_name_mode: ShortNameMode,
    /// Short name → fully qualified repository, with the file that set it.
    pub aliases: BTreeMap<String, (String, PathBuf)>,
    /// None: the default, the auth files only.
    pub credential_helpers: Option<Vec<String>>,
    pub registries: Vec<Registry>,
    /// The files read, in order.
    pub files: Vec<PathBuf>,
}

/// Where the caller wants the configuration read from (None: the defaults above).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Paths {
    pub file: Option<PathBuf>,
    pub drop_in_dir: Option<PathBuf>,
}

/// `$HOME`, else the password database's home of this user.
pub fn home_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return Some(PathBuf::from(home));
    }
    nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.dir)
}

/// `$XDG_CONFIG_HOME`, else `~/.config`.
pub fn user_config_dir() -> Option<PathBuf> {
    match std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        Some(dir) => Some(PathBuf::from(dir)),
        None => home_dir().map(|h| h.join(".config")),
    }
}

fn config_error(path: &Path, message: impl std::fmt::Display) -> Error {
    Error::new(Status::Config, format!("{}: {message}", path.display()))
        .with_subject(path.display().to_string())
}

/// The files that apply, in reading order: (path, is the main file, must exist).
fn files_to_read(paths: &Paths) -> Result<Vec<(PathBuf, bool, bool)>> {
    let user_dir = home_dir().map(|h| h.join(".config/containers"));
    let explicit = paths.file.clone().or_else(|| {
        std::env::var_os("CONTAINERS_REGISTRIES_CONF")
            .filter(|p| !p.is_empty())
            .map(PathBuf::from)
    });
    let user_file = user_dir
        .as_ref()
        .map(|d| d.join("registries.conf"))
        .filter(|f| f.exists());
    let (main, must_exist, user_mode) = match (explicit, user_file) {
        (Some(f), _) => (f, true, false),
        (None, Some(f)) => (f, true, true),
        (None, None) => (PathBuf::from(SYSTEM_FILE), false, false),
    };
    let mut files = vec![(main, true, must_exist)];
    let dirs: Vec<PathBuf> = match &paths.drop_in_dir {
        Some(dir) => vec![dir.clone()],
        None => {
            let user_drop_ins = user_dir.map(|d| d.join("registries.conf.d"));
            if user_mode {
                user_drop_ins.into_iter().collect()
            } else {
                std::iter::once(PathBuf::from(SYSTEM_DROP_IN_DIR))
                    .chain(user_drop_ins)
                    .collect()
            }
        }
    };
    for dir in dirs {
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(config_error(
                    &dir,
                    format!("reading the drop-in directory: {e}"),
                ))
            }
        };
        let mut names: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "conf") && p.is_file())
            .collect();
        names.sort();
        files.extend(names.into_iter().map(|p| (p, false, true)));
    }
    Ok(files)
}

impl RegistriesConf {
    /// Reads and merges the files `paths` selects. CONFIG errors name the file.
    pub fn load(paths: &Paths) -> Result<RegistriesConf> {
        let mut conf = RegistriesConf::default();
        for (path, is_main, must_exist) in files_to_read(paths)? {
            let text = match std::fs::read_to_string(&path) {
                Ok(text) => text,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && !must_exist => continue,
                Err(e) => return Err(config_error(&path, format!("cannot read: {e}"))),
            };
            let file = parse_file(&text, &path, is_main)?;
            conf.merge(file);
            conf.files.push(path);
        }
        crate::log::debug(format!(
            "registries.conf: read {:?}",
            conf.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
        ));
        Ok(conf)
    }

    /// Parses one file's text alone (for tests and callers with their own text).
    pub fn parse(text: &str, origin: &Path) -> Result<RegistriesConf> {
        let mut conf = RegistriesConf::default();
        conf.merge(parse_file(text, origin, true)?);
        conf.files.push(origin.to_path_buf());
        Ok(conf)
    }

    fn merge(&mut self, file: ParsedFile) {
        if let Some(search) = file.unqualified_search_registries {
            self.unqualified_search_registries = Some(search);
        }
        if let Some(mode) = file.short_name_mode {
            self.short_name_mode = mode;
        }
        if let Some(helpers) = file.credential_helpers {
            self.credential_helpers = Some(helpers);
        }
        for registry in file.registries {
            match self
                .registries
                .iter_mut()
                .find(|r| r.prefix == registry.prefix)
            {
                Some(existing) => *existing = registry,
                None => self.registries.push(registry),
            }
        }
        for (name, value) in file.aliases {
            if value.is_empty() {
                self.aliases.remove(&name);
            } else {
                self.aliases.insert(name, (value, file.origin.clone()));
            }
        }
    }

    /// The `[[registry]]` table for `name` (`host/repo:tag` or `host/repo@digest`): the one
    /// with the longest matching prefix, with the length of `name` that prefix covers.
    pub fn find_registry(&self, name: &str) -> Option<(&Registry, usize)> {
        let mut best: Option<(&Registry, usize)> = None;
        for registry in &self.registries {
            if let Some(matched) = prefix_match(name, &registry.prefix) {
                if best.is_none_or(|(b, _)| registry.prefix.len() > b.prefix.len()) {
                    best = Some((registry, matched));
                }
            }
        }
        best
    }

    /// The files read, for messages: "a, b" or "no registries.conf".
    pub fn describe_files(&self) -> String {
        if self.files.is_empty() {
            "no registries.conf file".to_string()
        } else {
            self.files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        }
    }
}

/// How much of `name` the prefix matches (containers/image's refMatchingPrefix): all of
/// it, or up to a ':', '/' or '@'. A `*.domain` prefix matches hosts under that domain.
pub fn prefix_match(name: &str, prefix: &str) -> Option<usize> {
    if let Some(domain) = prefix.strip_prefix('*') {
        // domain is ".example.com"
        let index = name.find(domain)?;
        if name[..index].contains('/') {
            return None;
        }
        let end = index + domain.len();
        return match name.as_bytes().get(end) {
            None | Some(b':' | b'/' | b'@') => Some(end),
            _ => None,
        };
    }
    let rest = name.strip_prefix(prefix)?;
    match rest.as_bytes().first() {
        None | Some(b':' | b'/' | b'@') => Some(prefix.len()),
        _ => None,
    }
}

/// One file, validated, before merging.
struct ParsedFile {
    origin: PathBuf,
    unqualified_search_registries: Option<Vec<String>>,
    short_name_mode: Option<ShortNameMode>,
    credential_helpers: Option<Vec<String>>,
    registries: Vec<Registry>,
    aliases: Vec<(String, String)>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawFile {
    unqualified_search_registries: Option<Vec<String>>,
    short_name_mode: Option<String>,
    credential_helpers: Option<Vec<String>>,
    #[serde(default)]
    registry: Vec<RawRegistry>,
    aliases: Option<BTreeMap<String, String>>,
    /// Version 1: `[registries.search]`, `[registries.insecure]`, `[registries.block]`.
    registries: Option<RawV1>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawRegistry {
    #[serde(default)]
    prefix: String,
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    blocked: bool,
    #[serde(default)]
    mirror_by_digest_only: bool,
    #[serde(default)]
    mirror: Vec<RawMirror>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
struct RawMirror {
    #[serde(default)]
    location: String,
    #[serde(default)]
    insecure: bool,
    #[serde(default)]
    pull_from_mirror: String,
}

#[derive(Deserialize, Default)]
struct RawV1 {
    search: Option<RawV1List>,
    insecure: Option<RawV1List>,
    block: Option<RawV1List>,
}

#[derive(Deserialize, Default)]
struct RawV1List {
    #[serde(default)]
    registries: Vec<String>,
}

fn parse_file(text: &str, origin: &Path, is_main: bool) -> Result<ParsedFile> {
    let raw: RawFile =
        toml::from_str(text).map_err(|e| config_error(origin, format!("malformed TOML: {e}")))?;
    let mut file = ParsedFile {
        origin: origin.to_path_buf(),
        unqualified_search_registries: raw.unqualified_search_registries,
        short_name_mode: match raw.short_name_mode.as_deref() {
            None | Some("") => None,
            Some("enforcing") => Some(ShortNameMode::Enforcing),
            Some("permissive") => Some(ShortNameMode::Permissive),
            Some("disabled") => Some(ShortNameMode::Disabled),
            Some(other) => {
                return Err(config_error(
                    origin,
                    format!(
                        "invalid short-name-mode {other:?} (enforcing, permissive or disabled)"
                    ),
                ))
            }
        },
        credential_helpers: raw.credential_helpers,
        registries: Vec::new(),
        aliases: Vec::new(),
    };
    if let Some(v1) = raw.registries {
        if !raw.registry.is_empty() || file.unqualified_search_registries.is_some() {
            return Err(config_error(
                origin,
                "mixes the version 1 [registries.*] tables with version 2 settings",
            ));
        }
        if !is_main {
            return Err(config_error(
                origin,
                "drop-in files must use the version 2 format, not [registries.*] tables",
            ));
        }
        let list = |l: Option<RawV1List>| l.map(|l| l.registries).unwrap_or_default();
        file.unqualified_search_registries = Some(list(v1.search));
        let mut tables: Vec<RawRegistry> = Vec::new();
        for (names, insecure) in [(list(v1.insecure), true), (list(v1.block), false)] {
            for name in names {
                let index = match tables.iter().position(|t| t.location == name) {
                    Some(i) => i,
                    None => {
                        tables.push(RawRegistry {
                            location: name.clone(),
                            ..Default::default()
                        });
                        tables.len() - 1
                    }
                };
                if insecure {
                    tables[index].insecure = true;
                } else {
                    tables[index].blocked = true;
                }
            }
        }
        for table in tables {
            file.registries.push(registry_from_raw(table, origin)?);
        }
    } else {
        for table in raw.registry {
            let registry = registry_from_raw(table, origin)?;
            if file.registries.iter().any(|r| r.prefix == registry.prefix) {
                return Err(config_error(
                    origin,
                    format!("[[registry]] prefix {:?} is defined twice", registry.prefix),
                ));
            }
            file.registries.push(registry);
        }
    }
    if let Some(search) = &file.unqualified_search_registries {
        for registry in search {
            if !is_host(registry) {
                return Err(config_error(
                    origin,
                    format!(
                        "unqualified-search-registries entry {registry:?} is not a host[:port]"
                    ),
                ));
            }
        }
    }
    for (name, value) in raw.aliases.unwrap_or_default() {
        validate_alias(&name, &value).map_err(|m| config_error(origin, m))?;
        file.aliases.push((name, value));
    }
    Ok(file)
}

/// A `location`: no URI scheme, trailing '/' removed.
fn parse_location(location: &str, origin: &Path) -> Result<String> {
    if location.starts_with("http://") || location.starts_with("https://") {
        return Err(config_error(
            origin,
            format!("invalid location {location:?}: URI schemes are not supported"),
        ));
    }
    Ok(location.trim_end_matches('/').to_string())
}

fn registry_from_raw(raw: RawRegistry, origin: &Path) -> Result<Registry> {
    let location = parse_location(&raw.location, origin)?;
    let prefix = if raw.prefix.is_empty() {
        location.clone()
    } else {
        parse_location(&raw.prefix, origin)?
    };
    if prefix.is_empty() {
        return Err(config_error(
            origin,
            "a [[registry]] table has neither prefix nor location",
        ));
    }
    if let Some(domain) = prefix.strip_prefix("*.") {
        if domain.is_empty() || domain.contains(['/', '@', ':', '*']) {
            return Err(config_error(
                origin,
                format!("invalid prefix {prefix:?}: a wildcard prefix must be *.domain with nothing after the domain"),
            ));
        }
    } else {
        if prefix.contains('*') {
            return Err(config_error(
                origin,
                format!("invalid prefix {prefix:?}: '*' is only allowed as a leading \"*.\""),
            ));
        }
        if location.is_empty() {
            return Err(config_error(
                origin,
                format!("[[registry]] with prefix {prefix:?} has an empty location (only *.domain prefixes may)"),
            ));
        }
    }
    let mut mirrors = Vec::new();
    for m in raw.mirror {
        let location = parse_location(&m.location, origin)?;
        if location.is_empty() {
            return Err(config_error(
                origin,
                format!("a mirror of {prefix:?} has no location"),
            ));
        }
        let pull_from_mirror = match m.pull_from_mirror.as_str() {
            "" | "all" => PullFromMirror::All,
            "digest-only" => PullFromMirror::DigestOnly,
            "tag-only" => PullFromMirror::TagOnly,
            other => {
                return Err(config_error(
                    origin,
                    format!("invalid pull-from-mirror {other:?} for mirror {location:?} (all, digest-only or tag-only)"),
                ))
            }
        };
        if raw.mirror_by_digest_only && !m.pull_from_mirror.is_empty() {
            return Err(config_error(
                origin,
                format!("registry {prefix:?} sets mirror-by-digest-only and its mirror {location:?} sets pull-from-mirror: use one"),
            ));
        }
        mirrors.push(Mirror {
            location,
            insecure: m.insecure,
            pull_from_mirror,
        });
    }
    Ok(Registry {
        prefix,
        location,
        insecure: raw.insecure,
        blocked: raw.blocked,
        mirror_by_digest_only: raw.mirror_by_digest_only,
        mirrors,
        origin: origin.to_path_buf(),
    })
}

/// `host[:port]`, a host being what a reference's first component may be.
fn is_host(s: &str) -> bool {
    !s.is_empty()
        && !s.contains(['/', '@'])
        && crate::registry::parse_reference(&format!("docker://{s}/x"))
            .map(|r| match r {
                crate::registry::Reference::Docker(d) => d.registry == s,
                _ => false,
            })
            .unwrap_or(false)
}

/// An alias maps a short name (no registry, tag or digest) to a fully qualified repository
/// (no tag or digest).
fn validate_alias(name: &str, value: &str) -> std::result::Result<(), String> {
    if name.is_empty() || name.contains(['@', ':']) || crate::registry::has_registry(name) {
        return Err(format!(
            "alias {name:?} is not a short name (no registry, tag or digest allowed)"
        ));
    }
    if !crate::registry::is_valid_repository(name) {
        return Err(format!("alias {name:?} is not a valid repository name"));
    }
    if value.is_empty() {
        return Ok(()); // removes an alias of an earlier file
    }
    let qualified = crate::registry::has_registry(value)
        && match crate::registry::parse_reference(&format!("docker://{value}")) {
            Ok(crate::registry::Reference::Docker(d)) => {
                d.digest.is_none() && !value.rsplit('/').next().unwrap_or("").contains(':')
            }
            _ => false,
        };
    if !qualified {
        return Err(format!(
            "alias {name:?} = {value:?}: the value must be a fully qualified repository without tag or digest"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RegistriesConf> {
        RegistriesConf::parse(text, Path::new("/test/registries.conf"))
    }

    #[test]
    fn version_2_file() {
        let conf = parse(
            r#"
unqualified-search-registries = ["quay.io", "127.0.0.1:5000"]
short-name-mode = "enforcing"
credential-helpers = ["containers-auth.json", "secretservice"]

[[registry]]
prefix = "example.com/foo"
location = "internal.example.net/bar/"
insecure = true

[[registry.mirror]]
location = "mirror-0.local/mirror-for-foo"

[[registry.mirror]]
location = "mirror-1.local/mirrors/foo"
insecure = true
pull-from-mirror = "digest-only"

[[registry]]
location = "blocked.io"
blocked = true

[[registry]]
prefix = "*.wild.io"

[aliases]
"box" = "docker.io/library/busybox"
"#,
        )
        .unwrap();
        assert_eq!(
            conf.unqualified_search_registries,
            Some(vec!["quay.io".to_string(), "127.0.0.1:5000".to_string()])
        );
        assert_eq!(conf.short_name_mode, ShortNameMode::Enforcing);
        assert_eq!(
            conf.credential_helpers.as_deref(),
            Some(
                &[
                    "containers-auth.json".to_string(),
                    "secretservice".to_string()
                ][..]
            )
        );
        let foo = &conf.registries[0];
        assert_eq!(foo.prefix, "example.com/foo");
        assert_eq!(foo.location, "internal.example.net/bar");
        assert!(foo.insecure && !foo.blocked);
        assert_eq!(foo.mirrors.len(), 2);
        assert_eq!(foo.mirrors[1].pull_from_mirror, PullFromMirror::DigestOnly);
        assert!(foo.mirrors[1].insecure && !foo.mirrors[0].insecure);
        assert_eq!(conf.registries[1].prefix, "blocked.io");
        assert!(conf.registries[1].blocked);
        assert_eq!(conf.registries[2].location, "");
        assert_eq!(
            conf.aliases.get("box").map(|a| a.0.as_str()),
            Some("docker.io/library/busybox")
        );
    }

    #[test]
    fn longest_prefix_wins_at_separators() {
        let conf = parse(
            r#"
[[registry]]
location = "example.com"
[[registry]]
location = "example.com/foo"
[[registry]]
prefix = "*.example.org"
[[registry]]
prefix = "*.b.example.org"
"#,
        )
        .unwrap();
        let prefix = |name: &str| conf.find_registry(name).map(|(r, n)| (r.prefix.clone(), n));
        assert_eq!(
            prefix("example.com/foo/bar:t"),
            Some(("example.com/foo".into(), 15))
        );
        assert_eq!(
            prefix("example.com/foo:t"),
            Some(("example.com/foo".into(), 15))
        );
        assert_eq!(
            prefix("example.com/foobar:t"),
            Some(("example.com".into(), 11))
        );
        assert_eq!(prefix("example.community/x:t"), None);
        assert_eq!(
            prefix("a.example.org/x:t"),
            Some(("*.example.org".into(), 13))
        );
        assert_eq!(
            prefix("a.b.example.org:5000/x:t"),
            Some(("*.b.example.org".into(), 15))
        );
        assert_eq!(prefix("example.org/x:t"), None);
        assert_eq!(prefix("x.io/a.example.org/x:t"), None);
    }

    #[test]
    fn version_1_tables_are_converted() {
        let conf = parse(
            r#"
[registries.search]
registries = ['registry1.com', 'registry2.com']
[registries.insecure]
registries = ['registry3.com']
[registries.block]
registries = ['registry.untrusted.com', 'registry3.com']
"#,
        )
        .unwrap();
        assert_eq!(
            conf.unqualified_search_registries,
            Some(vec![
                "registry1.com".to_string(),
                "registry2.com".to_string()
            ])
        );
        let r3 = conf.find_registry("registry3.com/x:t").unwrap().0;
        assert!(r3.insecure && r3.blocked);
        assert!(
            conf.find_registry("registry.untrusted.com/x:t")
                .unwrap()
                .0
                .blocked
        );
    }

    #[test]
    fn malformed_files_are_config_errors_naming_the_file() {
        for text in [
            "unqualified-search-registries = [",
            "short-name-mode = \"sometimes\"",
            "[[registry]]\nlocation = \"https://x.io\"",
            "[[registry]]\ninsecure = true",
            "[[registry]]\nprefix = \"x.io/*\"\nlocation = \"y.io\"",
            "[[registry]]\nprefix = \"*.x.io/foo\"",
            "[[registry]]\nprefix = \"x.io\"\nlocation = \"\"",
            "[[registry]]\nlocation = \"x.io\"\nmirror-by-digest-only = true\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"all\"",
            "[[registry]]\nlocation = \"x.io\"\n[[registry.mirror]]\nlocation = \"m.io\"\npull-from-mirror = \"sometimes\"",
            "[[registry]]\nlocation = \"x.io\"\n[[registry]]\nlocation = \"x.io\"",
            "[aliases]\n\"docker.io/x\" = \"docker.io/library/x\"",
            "[aliases]\n\"x:tag\" = \"docker.io/library/x\"",
            "[aliases]\n\"x\" = \"library/x\"",
            "[aliases]\n\"x\" = \"docker.io/library/x:tag\"",
            "unqualified-search-registries = [\"https://quay.io\"]",
            "unqualified-search-registries = [\"x.io\"]\n[registries.search]\nregistries = [\"y.io\"]",
        ] {
            let e = parse(text).unwrap_err();
            assert_eq!(e.status, Status::Config, "{text}: {}", e.message);
            assert!(e.message.contains("/test/registries.conf"), "{}", e.message);
        }
    }

    #[test]
    fn drop_ins_override_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("main.conf");
        std::fs::write(
            &main,
            r#"
unqualified-search-registries = ["a.io"]
short-name-mode = "enforcing"
[[registry]]
location = "x.io"
insecure = true
[aliases]
"one" = "a.io/one"
"two" = "a.io/two"
"#,
        )
        .unwrap();
        let drop_ins = dir.path().join("d");
        std::fs::create_dir(&drop_ins).unwrap();
        std::fs::write(
            drop_ins.join("20-second.conf"),
            "unqualified-search-registries = [\"c.io\"]\n[aliases]\n\"two\" = \"\"",
        )
        .unwrap();
        std::fs::write(
            drop_ins.join("10-first.conf"),
            "unqualified-search-registries = [\"b.io\"]\n[[registry]]\nlocation = \"x.io\"\nblocked = true\n[aliases]\n\"one\" = \"b.io/one\"",
        )
        .unwrap();
        std::fs::write(drop_ins.join("ignored.txt"), "not toml at all [").unwrap();
        let conf = RegistriesConf::load(&Paths {
            file: Some(main.clone()),
            drop_in_dir: Some(drop_ins.clone()),
        })
        .unwrap();
        assert_eq!(
            conf.unqualified_search_registries,
            Some(vec!["c.io".to_string()])
        );
        assert_eq!(conf.short_name_mode, ShortNameMode::Enforcing);
        let x = conf.find_registry("x.io/y:t").unwrap().0;
        assert!(
            x.blocked && !x.insecure,
            "the drop-in's table replaces the main one"
        );
        assert_eq!(conf.aliases.get("one").unwrap().0, "b.io/one");
        assert!(!conf.aliases.contains_key("two"));
        assert_eq!(
            conf.files,
            vec![
                main,
                drop_ins.join("10-first.conf"),
                drop_ins.join("20-second.conf")
            ]
        );

        // An explicit file that does not exist is an error; v1 tables in a drop-in too.
        let e = RegistriesConf::load(&Paths {
            file: Some(dir.path().join("missing.conf")),
            drop_in_dir: Some(drop_ins.clone()),
        })
        .unwrap_err();
        assert_eq!(e.status, Status::Config);
        std::fs::write(
            drop_ins.join("30-v1.conf"),
            "[registries.search]\nregistries = []",
        )
        .unwrap();
        let e = RegistriesConf::load(&Paths {
            file: Some(dir.path().join("main.conf")),
            drop_in_dir: Some(drop_ins),
        })
        .unwrap_err();
        assert!(e.message.contains("30-v1.conf"), "{}", e.message);
    }
}
