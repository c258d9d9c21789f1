//! serde helpers for the vocabulary types (the vocab crate has no dependencies).

use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use skillgen_vocab::{Backend, Capability, Family, Modality, NativeImpl, Task};

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

pub(crate) fn native<S: Serializer>(v: &[(Task, NativeImpl)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(v.len()))?;
    for (task, imp) in v {
        m.serialize_entry(task.as_str(), imp.as_str())?;
    }
    m.end()
}

pub(crate) fn refused<S: Serializer>(v: &[(Backend, &str)], s: S) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(Some(v.len()))?;
    for (backend, why) in v {
        m.serialize_entry(backend.as_str(), why)?;
    }
    m.end()
}
