//! Platforms (os/architecture/variant) and choosing an image index entry for one, following
//! containerd's normalisation and containers/image's variant compatibility.

use crate::error::{Error, Result};
use std::fmt;

/// An OCI platform in Go's naming: `linux/amd64`, `linux/arm64`, `linux/arm/v7`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    /// The platform this library runs on: linux plus the GOARCH-style architecture.
    pub fn host() -> Platform {
        let (architecture, variant) = host_arch();
        Platform {
            os: "linux".to_string(),
            architecture: architecture.to_string(),
            variant: variant.map(str::to_string),
        }
    }

    /// Parses `os/arch[/variant]`, e.g. `linux/arm64/v8`. Architecture aliases
    /// (`x86_64`, `aarch64`, `armhf` ...) become Go names.
    pub fn parse(s: &str) -> Result<Platform> {
        let parts: Vec<&str> = s.split('/').collect();
        let valid_part = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        };
        if !(2..=3).contains(&parts.len()) || !parts.iter().all(|p| valid_part(p)) {
            return Err(Error::invalid(format!(
                "invalid platform {s:?} (expected os/arch[/variant], e.g. linux/arm64 or linux/arm/v7)"
            ))
            .with_subject(s));
        }
        let os = parts[0].to_ascii_lowercase();
        let (architecture, variant) = normalize_arch(
            &parts[1].to_ascii_lowercase(),
            parts.get(2).map(|v| v.to_ascii_lowercase()),
        );
        Ok(Platform {
            os,
            architecture,
            variant,
        })
    }

    /// This platform with containerd's canonical spelling, used for comparing: arm64's v8
    /// and amd64's v1 are the baseline (no variant), a bare arm is arm/v7.
    fn canonical(&self) -> Platform {
        let (architecture, variant) = normalize_arch(
            &self.architecture.to_ascii_lowercase(),
            self.variant.as_ref().map(|v| v.to_ascii_lowercase()),
        );
        let variant = match (architecture.as_str(), variant.as_deref()) {
            ("arm64", Some("v8" | "v8.0")) | ("amd64", Some("v1")) => None,
            ("arm", None) => Some("v7".to_string()),
            _ => variant,
        };
        Platform {
            os: self.os.to_ascii_lowercase(),
            architecture,
            variant,
        }
    }

    /// Variants that run here, most preferred first.
    fn compatible_variants(&self) -> Vec<Option<String>> {
        let own = self.variant.clone();
        let lower = |versions: &[&str]| -> Vec<Option<String>> {
            versions.iter().map(|v| Some(v.to_string())).collect()
        };
        match (self.architecture.as_str(), own.as_deref()) {
            ("arm", Some("v8")) => lower(&["v8", "v7", "v6", "v5"]),
            ("arm", Some("v7")) => lower(&["v7", "v6", "v5"]),
            ("arm", Some("v6")) => lower(&["v6", "v5"]),
            ("amd64", Some("v4")) => vec![
                Some("v4".into()),
                Some("v3".into()),
                Some("v2".into()),
                None,
            ],
            ("amd64", Some("v3")) => vec![Some("v3".into()), Some("v2".into()), None],
            ("amd64", Some("v2")) => vec![Some("v2".into()), None],
            ("arm64", Some(v)) if v.starts_with("v9") => vec![Some(v.to_string()), None],
            _ => vec![own],
        }
    }
}

/// Go's GOOS/GOARCH-style name for the architecture we were compiled for.
fn host_arch() -> (&'static str, Option<&'static str>) {
    match std::env::consts::ARCH {
        "x86_64" => ("amd64", None),
        "x86" => ("386", None),
        "aarch64" => ("arm64", None),
        "arm" if cfg!(target_feature = "v7") => ("arm", Some("v7")),
        "arm" => ("arm", Some("v6")),
        "powerpc64" if cfg!(target_endian = "little") => ("ppc64le", None),
        "powerpc64" => ("ppc64", None),
        "mips64" if cfg!(target_endian = "little") => ("mips64le", None),
        "mips" if cfg!(target_endian = "little") => ("mipsle", None),
        "loongarch64" => ("loong64", None),
        // s390x, riscv64, mips64 ... are spelled the same.
        other => (other, None),
    }
}

/// containerd's normalizeArch, minus the baseline-variant folding done in `canonical`.
fn normalize_arch(arch: &str, variant: Option<String>) -> (String, Option<String>) {
    let variant = variant.filter(|v| !v.is_empty());
    match arch {
        "i386" | "i686" => ("386".into(), None),
        "x86_64" | "x86-64" | "amd64" => ("amd64".into(), variant),
        "aarch64" | "arm64" => {
            let variant = variant.map(|v| match v.as_str() {
                "8" => "v8".to_string(),
                "9" | "9.0" | "v9.0" => "v9".to_string(),
                _ => v,
            });
            ("arm64".into(), variant)
        }
        "armhf" => ("arm".into(), Some("v7".into())),
        "armel" => ("arm".into(), Some("v6".into())),
        "arm" => {
            let variant = variant.map(|v| match v.as_str() {
                "5" | "6" | "7" | "8" => format!("v{v}"),
                _ => v,
            });
            ("arm".into(), variant)
        }
        other => (other.to_string(), variant),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

/// Index of the entry to pull for `wanted` among the index's platforms (None for entries
/// without one). The most preferred compatible variant wins, then index order; a wanted
/// platform without variant takes any variant when no baseline entry exists, as
/// containers/image does.
pub fn choose(wanted: &Platform, candidates: &[Option<Platform>]) -> Option<usize> {
    let wanted = wanted.canonical();
    let canonical: Vec<Option<Platform>> = candidates
        .iter()
        .map(|c| c.as_ref().map(Platform::canonical))
        .collect();
    let same_os_arch = |c: &Platform| c.os == wanted.os && c.architecture == wanted.architecture;
    for variant in wanted.compatible_variants() {
        let found = canonical.iter().position(|c| {
            c.as_ref()
                .is_some_and(|c| same_os_arch(c) && c.variant == variant)
        });
        if found.is_some() {
            return found;
        }
    }
    if wanted.variant.is_none() {
        return canonical
            .iter()
            .position(|c| c.as_ref().is_some_and(same_os_arch));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Platform {
        Platform::parse(s).unwrap()
    }

    #[test]
    fn parse_normalises_arch_names() {
        assert_eq!(
            p("linux/arm64/v8"),
            Platform {
                os: "linux".into(),
                architecture: "arm64".into(),
                variant: Some("v8".into())
            }
        );
        assert_eq!(
            p("linux/amd64"),
            Platform {
                os: "linux".into(),
                architecture: "amd64".into(),
                variant: None
            }
        );
        assert_eq!(p("Linux/x86_64"), p("linux/amd64"));
        assert_eq!(p("linux/aarch64"), p("linux/arm64"));
        assert_eq!(p("linux/armhf"), p("linux/arm/v7"));
        assert_eq!(p("linux/arm/7"), p("linux/arm/v7"));
        assert_eq!(p("linux/i386"), p("linux/386"));
        assert_eq!(p("linux/arm/v6").to_string(), "linux/arm/v6");
        assert_eq!(p("linux/s390x").to_string(), "linux/s390x");
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/amd64/v1/x",
            "linux/am d64",
            "linux//v7",
        ] {
            let e = Platform::parse(bad).unwrap_err();
            assert_eq!(e.status, crate::error::Status::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn host_platform_is_go_style() {
        let host = Platform::host();
        assert_eq!(host.os, "linux");
        let expected = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "arm" => "arm",
            _ => return,
        };
        assert_eq!(host.architecture, expected);
        // It parses back to itself.
        assert_eq!(Platform::parse(&host.to_string()).unwrap(), host);
    }

    fn entries(list: &[&str]) -> Vec<Option<Platform>> {
        list.iter()
            .map(|s| if s.is_empty() { None } else { Some(p(s)) })
            .collect()
    }

    #[test]
    fn choose_exact_and_compatible_variants() {
        let index = entries(&[
            "linux/amd64",
            "linux/arm/v6",
            "linux/arm/v7",
            "linux/arm64/v8",
            "linux/s390x",
        ]);
        assert_eq!(choose(&p("linux/amd64"), &index), Some(0));
        assert_eq!(choose(&p("linux/arm/v7"), &index), Some(2));
        assert_eq!(choose(&p("linux/arm/v6"), &index), Some(1));
        assert_eq!(
            choose(&p("linux/arm"), &index),
            Some(2),
            "bare arm means v7"
        );
        assert_eq!(choose(&p("linux/arm/v5"), &index), None, "v5 cannot run v6");
        assert_eq!(
            choose(&p("linux/arm64"), &index),
            Some(3),
            "arm64 and arm64/v8 are the same"
        );
        assert_eq!(choose(&p("linux/arm64/v8"), &index), Some(3));
        assert_eq!(choose(&p("windows/amd64"), &index), None);
        assert_eq!(choose(&p("linux/ppc64le"), &index), None);
        // arm/v8 (32-bit on a v8 core) prefers v7 over v6 when there is no v8.
        assert_eq!(choose(&p("linux/arm/v8"), &index), Some(2));
        // amd64/v3 falls back to the baseline.
        assert_eq!(choose(&p("linux/amd64/v3"), &index), Some(0));
    }

    #[test]
    fn choose_prefers_baseline_then_any_variant() {
        let index = entries(&["", "linux/amd64/v3", "linux/amd64", "linux/arm64"]);
        assert_eq!(choose(&p("linux/amd64"), &index), Some(2));
        let only_v3 = entries(&["linux/amd64/v3"]);
        assert_eq!(choose(&p("linux/amd64"), &only_v3), Some(0));
        assert_eq!(choose(&p("linux/amd64/v2"), &only_v3), None);
        // An arm entry without variant counts as v7.
        assert_eq!(
            choose(&p("linux/arm/v7"), &entries(&["linux/arm"])),
            Some(0)
        );
        assert_eq!(choose(&p("linux/arm/v6"), &entries(&["linux/arm"])), None);
        // Entries without a platform (attestations, artifacts) are never chosen.
        assert_eq!(choose(&p("linux/amd64"), &entries(&["", ""])), None);
        // Index order decides among equals.
        assert_eq!(
            choose(
                &p("linux/arm64"),
                &entries(&["linux/arm64", "linux/arm64/v8"])
            ),
            Some(0)
        );
    }
}
