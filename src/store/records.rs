//! The records of layers.json, images.json, containers.json and mountpoints.json, written the
//! way Go's encoding/json writes containers/storage's types (store-format.md §2): fields in struct
//! order, `omitempty` fields dropped, unknown fields written by newer tools kept as they were.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// One entry of layers.json.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct LayerRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub parent: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mountlabel: String,
    #[serde(default)]
    pub created: String,
    #[serde(
        rename = "compressed-diff-digest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub compressed_diff_digest: String,
    #[serde(rename = "compressed-size", default, skip_serializing_if = "is_zero")]
    pub compressed_size: i64,
    #[serde(
        rename = "diff-digest",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub diff_digest: String,
    #[serde(rename = "diff-size", default, skip_serializing_if = "is_zero")]
    pub diff_size: i64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub compression: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uidset: Vec<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gidset: Vec<u32>,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub flags: Map<String, Value>,
    /// Fields this version does not know (uidmap, big-data-names, toc-digest, ...), kept verbatim.
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl LayerRecord {
    pub fn is_incomplete(&self) -> bool {
        self.flags
            .get("incomplete")
            .and_then(Value::as_bool)
            .unwrap_or(false)
    }
    pub fn set_incomplete(&mut self, on: bool) {
        if on {
            self.flags.insert("incomplete".into(), Value::Bool(true));
        } else {
            self.flags.remove("incomplete");
        }
    }
}

/// One entry of images.json.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ImageRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub digest: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(
        rename = "names-history",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub names_history: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub layer: String,
    #[serde(
        rename = "mapped-layers",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub mapped_layers: Vec<String>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    #[serde(
        rename = "big-data-names",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub big_data_names: Vec<String>,
    #[serde(
        rename = "big-data-sizes",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub big_data_sizes: BTreeMap<String, i64>,
    #[serde(
        rename = "big-data-digests",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub big_data_digests: BTreeMap<String, String>,
    #[serde(default)]
    pub created: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub flags: Map<String, Value>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One entry of containers.json.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ContainerRecord {
    pub id: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub names: Vec<String>,
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub layer: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub metadata: String,
    #[serde(
        rename = "big-data-names",
        default,
        skip_serializing_if = "Vec::is_empty"
    )]
    pub big_data_names: Vec<String>,
    #[serde(
        rename = "big-data-sizes",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub big_data_sizes: BTreeMap<String, i64>,
    #[serde(
        rename = "big-data-digests",
        default,
        skip_serializing_if = "BTreeMap::is_empty"
    )]
    pub big_data_digests: BTreeMap<String, String>,
    #[serde(default)]
    pub created: String,
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub flags: Map<String, Value>,
    #[serde(flatten)]
    pub other: Map<String, Value>,
}

/// One entry of mountpoints.json (run root).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct MountRecord {
    pub id: String,
    #[serde(default)]
    pub path: String,
    #[serde(default)]
    pub count: i64,
}

/// Serialises like Go's encoding/json: compact, and `<`, `>`, `&` escaped as \u003c etc.
pub fn to_go_json<T: Serialize>(value: &T) -> serde_json::Result<Vec<u8>> {
    let raw = serde_json::to_vec(value)?;
    let mut out = Vec::with_capacity(raw.len());
    for b in raw {
        match b {
            b'<' => out.extend_from_slice(b"\\u003c"),
            b'>' => out.extend_from_slice(b"\\u003e"),
            b'&' => out.extend_from_slice(b"\\u0026"),
            _ => out.push(b),
        }
    }
    Ok(out)
}

/// Current time as Go marshals a UTC time.Time: RFC 3339 with nanoseconds, trailing zeros trimmed.
pub fn now_rfc3339() -> String {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format_rfc3339(d.as_secs() as i64, d.subsec_nanos())
}

pub fn format_rfc3339(secs: i64, nanos: u32) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Civil-from-days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + if month <= 2 { 1 } else { 0 };
    let mut out = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    if nanos > 0 {
        let frac = format!("{nanos:09}");
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layer_record_round_trips_and_keeps_unknown_fields() {
        let raw = r#"{"id":"aa","parent":"bb","created":"2026-11-23T05:49:05.650009226Z","compressed-diff-digest":"sha256:1","compressed-size":483,"diff-digest":"sha256:2","diff-size":20480,"compression":2,"uidset":[0,1000],"gidset":[0,1000],"uidmap":[{"container_id":0,"host_id":100000,"size":65536}]}"#;
        let rec: LayerRecord = serde_json::from_str(raw).unwrap();
        assert_eq!(rec.compressed_size, 483);
        assert!(rec.other.contains_key("uidmap"));
        let back = String::from_utf8(to_go_json(&rec).unwrap()).unwrap();
        let again: LayerRecord = serde_json::from_str(&back).unwrap();
        assert_eq!(rec, again);
        assert!(
            back.starts_with(r#"{"id":"aa","parent":"bb","created":"#),
            "{back}"
        );
    }

    #[test]
    fn empty_fields_are_omitted_like_go_omitempty() {
        let rec = LayerRecord {
            id: "x".into(),
            created: "t".into(),
            ..Default::default()
        };
        assert_eq!(
            String::from_utf8(to_go_json(&rec).unwrap()).unwrap(),
            r#"{"id":"x","created":"t"}"#
        );
    }

    #[test]
    fn html_characters_are_escaped_as_go_does() {
        let rec = ContainerRecord {
            id: "c".into(),
            metadata: "<a&b>".into(),
            ..Default::default()
        };
        let s = String::from_utf8(to_go_json(&rec).unwrap()).unwrap();
        assert!(s.contains(r#""metadata":"\u003ca\u0026b\u003e""#), "{s}");
    }

    #[test]
    fn rfc3339_formatting() {
        assert_eq!(format_rfc3339(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(
            format_rfc3339(1_795_412_945, 650_009_226),
            "2026-11-23T05:49:05.650009226Z"
        );
        assert_eq!(
            format_rfc3339(951_782_400, 500_000_000),
            "2000-02-29T00:00:00.5Z"
        );
    }
}
