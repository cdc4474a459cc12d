//! [`Handoff`] for the standard collections Python programs pass around as
//! `dict`, `set` and `collections.deque`, and for `Box`: a length, then the
//! elements (key before value). Decoding reserves nothing up front (a
//! hostile length costs only the elements really present) and fails on
//! the first element that does not decode.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::hash::{BuildHasher, Hash};

use super::{Handoff, HandoffError, MAX_ZERO_SIZED_LEN, take_len};

fn encode_all<'a, T: Handoff + 'a>(len: usize, items: impl Iterator<Item = &'a T>, out: &mut Vec<u8>) {
    (len as u64).encode(out);
    for x in items {
        x.encode(out);
    }
}

/// A map's encoding: its length, then each key followed by its value
/// (what `decode_all::<(K, V)>` reads).
fn encode_pairs<'a, K: Handoff + 'a, V: Handoff + 'a>(
    len: usize,
    pairs: impl Iterator<Item = (&'a K, &'a V)>,
    out: &mut Vec<u8>,
) {
    (len as u64).encode(out);
    for (k, v) in pairs {
        k.encode(out);
        v.encode(out);
    }
}

fn decode_all<T: Handoff>(
    input: &mut &[u8],
    what: &'static str,
    mut push: impl FnMut(T),
) -> Result<(), HandoffError> {
    let zero_sized_max = if std::mem::size_of::<T>() == 0 { MAX_ZERO_SIZED_LEN } else { 0 };
    let n = take_len(input, zero_sized_max, what)?;
    for _ in 0..n {
        push(T::decode(input)?);
    }
    Ok(())
}

/// ```
/// use std::collections::HashMap;
/// use shmproc::Handoff;
/// let counts = HashMap::from([("apple".to_string(), 3u64), ("pear".to_string(), 1)]);
/// let mut bytes = Vec::new();
/// counts.encode(&mut bytes);
/// assert_eq!(HashMap::<String, u64>::decode(&mut &bytes[..]).unwrap(), counts);
/// ```
impl<K: Handoff + Eq + Hash, V: Handoff, S: BuildHasher + Default> Handoff for HashMap<K, V, S> {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_pairs(self.len(), self.iter(), out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let mut m = HashMap::with_hasher(S::default());
        decode_all::<(K, V)>(input, "HashMap", |(k, v)| {
            m.insert(k, v);
        })?;
        Ok(m)
    }
}

/// ```
/// use std::collections::BTreeMap;
/// use shmproc::Handoff;
/// let m = BTreeMap::from([(1u32, "one".to_string()), (2, "two".to_string())]);
/// let mut bytes = Vec::new();
/// m.encode(&mut bytes);
/// assert_eq!(BTreeMap::<u32, String>::decode(&mut &bytes[..]).unwrap(), m);
/// ```
impl<K: Handoff + Ord, V: Handoff> Handoff for BTreeMap<K, V> {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_pairs(self.len(), self.iter(), out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let mut m = BTreeMap::new();
        decode_all::<(K, V)>(input, "BTreeMap", |(k, v)| {
            m.insert(k, v);
        })?;
        Ok(m)
    }
}

/// ```
/// use std::collections::HashSet;
/// use shmproc::Handoff;
/// let s = HashSet::from(["a".to_string(), "b".to_string()]);
/// let mut bytes = Vec::new();
/// s.encode(&mut bytes);
/// assert_eq!(HashSet::<String>::decode(&mut &bytes[..]).unwrap(), s);
/// ```
impl<T: Handoff + Eq + Hash, S: BuildHasher + Default> Handoff for HashSet<T, S> {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_all(self.len(), self.iter(), out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let mut s = HashSet::with_hasher(S::default());
        decode_all(input, "HashSet", |x| {
            s.insert(x);
        })?;
        Ok(s)
    }
}

/// ```
/// use std::collections::BTreeSet;
/// use shmproc::Handoff;
/// let s = BTreeSet::from([3u8, 1, 2]);
/// let mut bytes = Vec::new();
/// s.encode(&mut bytes);
/// assert_eq!(BTreeSet::<u8>::decode(&mut &bytes[..]).unwrap(), s);
/// ```
impl<T: Handoff + Ord> Handoff for BTreeSet<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_all(self.len(), self.iter(), out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let mut s = BTreeSet::new();
        decode_all(input, "BTreeSet", |x| {
            s.insert(x);
        })?;
        Ok(s)
    }
}

/// ```
/// use std::collections::VecDeque;
/// use shmproc::Handoff;
/// let d = VecDeque::from([1i64, -2, 3]);
/// let mut bytes = Vec::new();
/// d.encode(&mut bytes);
/// assert_eq!(VecDeque::<i64>::decode(&mut &bytes[..]).unwrap(), d);
/// ```
impl<T: Handoff> Handoff for VecDeque<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        encode_all(self.len(), self.iter(), out);
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        let mut d = VecDeque::new();
        decode_all(input, "VecDeque", |x| d.push_back(x))?;
        Ok(d)
    }
}

/// ```
/// use shmproc::Handoff;
/// let b = Box::new((7u32, "seven".to_string()));
/// let mut bytes = Vec::new();
/// b.encode(&mut bytes);
/// assert_eq!(Box::<(u32, String)>::decode(&mut &bytes[..]).unwrap(), b);
/// ```
impl<T: Handoff> Handoff for Box<T> {
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out)
    }
    fn decode(input: &mut &[u8]) -> Result<Self, HandoffError> {
        T::decode(input).map(Box::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hostile_length_decodes_only_what_is_there() {
        let mut bytes = Vec::new();
        (u64::MAX >> 1).encode(&mut bytes);
        assert!(HashMap::<u64, u64>::decode(&mut &bytes[..]).is_err());
        let mut bytes = Vec::new();
        3u64.encode(&mut bytes);
        1u64.encode(&mut bytes); // one element of three
        assert_eq!(BTreeSet::<u64>::decode(&mut &bytes[..]), Err(HandoffError::Truncated("u64")));
    }
}
