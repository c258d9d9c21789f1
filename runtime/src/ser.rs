//! serde helpers for the vocabulary types (the vocab crate has no dependencies).

use serde::ser::{SerializeSeq, Serializer};
use skillgen_vocab::{Capability, Family, Modality, Task};

pub(crate) fn family<S: Serializer>(v: &Family, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

pub(crate) fn task<S: Serializer>(v: &Task, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(v.as_str())
}

pub(crate) fn opt_capability<S: Serializer>(
    v: &Option<Capability>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match v {
        Some(c) => s.serialize_str(c.as_str()),
        None => s.serialize_none(),
    }
}

pub(crate) fn modalities<S: Serializer>(v: &&[Modality], s: S) -> Result<S::Ok, S::Error> {
    let mut seq = s.serialize_seq(Some(v.len()))?;
    for m in v.iter() {
        seq.serialize_element(m.as_str())?;
    }
    seq.end()
}
