//! Lossless serde for paths and byte strings.
//!
//! Paths are bytes on Unix and may not be UTF-8; the journal must give back exactly the path it
//! was given, so a path is written as a JSON string when it is UTF-8 and as an array of bytes
//! otherwise. (`--json` output is for people's tools and uses a lossy string instead.)

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ffi::OsString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum Repr<'a> {
    Text(std::borrow::Cow<'a, str>),
    Bytes(Vec<u8>),
}

fn ser_bytes<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    match std::str::from_utf8(b) {
        Ok(t) => Repr::Text(t.into()).serialize(s),
        Err(_) => Repr::Bytes(b.to_vec()).serialize(s),
    }
}

fn de_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    Ok(match Repr::deserialize(d)? {
        Repr::Text(t) => t.into_owned().into_bytes(),
        Repr::Bytes(b) => b,
    })
}

/// `#[serde(with = "crate::pathser::path")]`
pub mod path {
    use super::*;
    pub fn serialize<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
        ser_bytes(p.as_os_str().as_bytes(), s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Ok(PathBuf::from(OsString::from_vec(de_bytes(d)?)))
    }
}

/// `#[serde(with = "crate::pathser::opt_path")]`
pub mod opt_path {
    use super::*;
    pub fn serialize<S: Serializer>(p: &Option<PathBuf>, s: S) -> Result<S::Ok, S::Error> {
        match p {
            Some(p) => super::path::serialize(p, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<PathBuf>, D::Error> {
        Ok(Option::<Repr>::deserialize(d)?.map(|r| {
            PathBuf::from(OsString::from_vec(match r {
                Repr::Text(t) => t.into_owned().into_bytes(),
                Repr::Bytes(b) => b,
            }))
        }))
    }
}

/// `#[serde(with = "crate::pathser::paths")]` for `Vec<PathBuf>`.
pub mod paths {
    use super::*;
    #[derive(Serialize, Deserialize)]
    struct P(#[serde(with = "super::path")] PathBuf);
    pub fn serialize<S: Serializer>(p: &[PathBuf], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(p.iter().map(|p| P(p.clone())))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<PathBuf>, D::Error> {
        Ok(Vec::<P>::deserialize(d)?.into_iter().map(|p| p.0).collect())
    }
}

/// `#[serde(with = "crate::pathser::bytes")]` for file contents kept in the journal (used by
/// the tests of this module; the journal uses [`opt_bytes`]).
#[cfg(test)]
pub mod bytes {
    use super::*;
    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        ser_bytes(b, s)
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        de_bytes(d)
    }
}

/// `#[serde(with = "crate::pathser::opt_bytes")]`
pub mod opt_bytes {
    use super::*;
    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => ser_bytes(b, s),
            None => s.serialize_none(),
        }
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Repr>::deserialize(d)?.map(|r| match r {
            Repr::Text(t) => t.into_owned().into_bytes(),
            Repr::Bytes(b) => b,
        }))
    }
}

/// A path for people: lossy where it must be, quoted by the caller where it matters.
pub fn show(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct T {
        #[serde(with = "path")]
        p: PathBuf,
        #[serde(with = "opt_path")]
        o: Option<PathBuf>,
        #[serde(with = "paths")]
        v: Vec<PathBuf>,
        #[serde(with = "bytes")]
        b: Vec<u8>,
    }

    #[test]
    fn non_utf8_paths_round_trip_exactly() {
        let bad = PathBuf::from(OsString::from_vec(b"/h/bad\xff\nname".to_vec()));
        let t = T {
            p: bad.clone(),
            o: Some(bad.clone()),
            v: vec![bad.clone(), PathBuf::from("/ok")],
            b: b"\xfe\x00x".to_vec(),
        };
        let json = serde_json::to_string(&t).unwrap();
        let back: T = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t);
        assert!(
            json.contains("\"/ok\""),
            "UTF-8 paths stay readable: {json}"
        );
    }
}
