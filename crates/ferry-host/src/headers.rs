//! An ordered header map as plugins see it: names are lower case, entries keep
//! their order (pseudo-headers first, then wire order), and a name may repeat.

use bytes::Bytes;

/// Ordered multimap of header names to values, both raw bytes.
///
/// **Invariant:** stored names are lower case (`append_lowercase` callers
/// guarantee it, every other way in lower-cases).
///
/// Lookups ignore ASCII case, and names a plugin adds are lower-cased, the way
/// Envoy's header map treats them. A `Vec` beats a hash map here: requests
/// carry a handful of headers and plugins often read them all in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderMap {
    entries: Vec<(Bytes, Bytes)>,
    /// Sum of the lengths of all names and values, kept up to date.
    bytes: usize,
}

impl HeaderMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty map with room for `capacity` entries.
    pub fn with_capacity(capacity: usize) -> Self {
        Self { entries: Vec::with_capacity(capacity), bytes: 0 }
    }

    /// Appends an entry whose name the caller knows to be lower case already
    /// (names from hyper, pseudo-headers).
    pub fn append_lowercase(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        let (name, value) = (name.into(), value.into());
        self.bytes += name.len() + value.len();
        self.entries.push((name, value));
    }

    /// Appends an entry, lower-casing its name (`proxy_add_header_map_value`).
    pub fn add(&mut self, name: &[u8], value: &[u8]) {
        self.bytes += name.len() + value.len();
        self.entries.push((lowercase(name), Bytes::copy_from_slice(value)));
    }

    /// Sets `name` to the single value `value`: the first entry keeps its
    /// place, later ones go; appends if absent (`proxy_replace_header_map_value`).
    pub fn replace(&mut self, name: &[u8], value: &[u8]) {
        let value = Bytes::copy_from_slice(value);
        let name = lowercase_cow(name);
        match self.position_exact(&name) {
            Some(first) => {
                self.bytes = self.bytes + value.len() - self.entries[first].1.len();
                self.entries[first].1 = value;
                // Duplicates are rare: only then drop the later ones.
                if self.entries[first + 1..].iter().any(|(n, _)| **n == *name) {
                    self.remove_from(first + 1, &name);
                }
            }
            None => {
                self.bytes += name.len() + value.len();
                self.entries.push((Bytes::copy_from_slice(&name), value));
            }
        }
    }

    /// Removes every entry named `name` (`proxy_remove_header_map_value`).
    pub fn remove(&mut self, name: &[u8]) {
        let name = lowercase_cow(name);
        if let Some(first) = self.position_exact(&name) {
            self.remove_from(first, &name);
        }
    }

    /// Removes the entries named `lowercase_name` from index `start` on, in
    /// one pass that keeps the others' order.
    fn remove_from(&mut self, start: usize, lowercase_name: &[u8]) {
        let mut kept = start;
        for i in start..self.entries.len() {
            if *self.entries[i].0 == *lowercase_name {
                self.bytes -= self.entries[i].0.len() + self.entries[i].1.len();
            } else {
                self.entries.swap(kept, i);
                kept += 1;
            }
        }
        self.entries.truncate(kept);
    }

    /// The first value of `name`.
    pub fn get(&self, name: &[u8]) -> Option<&Bytes> {
        self.position(name).map(|i| &self.entries[i].1)
    }

    /// Every value of `name`, joined with commas, as Envoy reads a
    /// repeated header (attributes, route and log matchers).
    pub fn joined(&self, name: &[u8]) -> Option<Vec<u8>> {
        let name = lowercase_cow(name);
        let mut values = self.entries.iter().filter(|(n, _)| **n == *name).map(|(_, v)| v);
        let mut out = values.next()?.to_vec();
        for value in values {
            out.push(b',');
            out.extend_from_slice(value);
        }
        Some(out)
    }

    /// Whether `name` is present.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.position(name).is_some()
    }

    /// Replaces the whole map with `pairs`, lower-casing names (`proxy_set_header_map_pairs`).
    pub fn set_all<'a>(&mut self, pairs: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) {
        self.entries.clear();
        self.bytes = 0;
        for (name, value) in pairs {
            self.add(name, value);
        }
    }

    /// Entries in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> + Clone {
        self.entries.iter().map(|(n, v)| (&n[..], &v[..]))
    }

    /// Entries in order, as shared byte buffers (cheap to hand to hyper).
    pub fn entries(&self) -> &[(Bytes, Bytes)] {
        &self.entries
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the map has no entry.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of the lengths of all names and values, which is what Envoy
    /// reports for `proxy_get_header_map_size`.
    pub fn byte_size(&self) -> usize {
        self.bytes
    }

    fn position(&self, name: &[u8]) -> Option<usize> {
        self.position_exact(&lowercase_cow(name))
    }

    /// Stored names are lower case, so a lower-cased name compares bytewise.
    fn position_exact(&self, lowercase_name: &[u8]) -> Option<usize> {
        self.entries.iter().position(|(n, _)| **n == *lowercase_name)
    }
}

impl<'a> FromIterator<(&'a str, &'a str)> for HeaderMap {
    fn from_iter<T: IntoIterator<Item = (&'a str, &'a str)>>(iter: T) -> Self {
        let mut map = HeaderMap::new();
        for (n, v) in iter {
            map.add(n.as_bytes(), v.as_bytes());
        }
        map
    }
}

/// `name` lower-cased, borrowed when it already is (the usual case).
fn lowercase_cow(name: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if name.iter().any(u8::is_ascii_uppercase) {
        std::borrow::Cow::Owned(name.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

fn lowercase(name: &[u8]) -> Bytes {
    if name.iter().any(u8::is_ascii_uppercase) {
        Bytes::from(name.to_ascii_lowercase())
    } else {
        Bytes::copy_from_slice(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names_values(map: &HeaderMap) -> Vec<(String, String)> {
        map.iter().map(|(n, v)| (String::from_utf8_lossy(n).into(), String::from_utf8_lossy(v).into())).collect()
    }

    #[test]
    fn lookups_ignore_case_and_added_names_are_lowercased() {
        let mut map: HeaderMap = [("Accept", "*/*")].into_iter().collect();
        assert_eq!(map.get(b"ACCEPT").map(|v| &v[..]), Some(&b"*/*"[..]));
        map.add(b"X-Custom", b"1");
        assert_eq!(names_values(&map)[1], ("x-custom".into(), "1".into()));
    }

    #[test]
    fn replace_keeps_the_first_position_and_drops_duplicates() {
        let mut map: HeaderMap = [("a", "1"), ("dup", "x"), ("b", "2"), ("dup", "y")].into_iter().collect();
        map.replace(b"DUP", b"z");
        assert_eq!(names_values(&map), [("a", "1"), ("dup", "z"), ("b", "2")].map(|(n, v)| (n.into(), v.into())));
        map.replace(b"new", b"v");
        assert_eq!(names_values(&map).last().unwrap(), &("new".into(), "v".into()));
    }

    #[test]
    fn remove_drops_every_value_and_missing_names_are_fine() {
        let mut map: HeaderMap = [("dup", "x"), ("b", "2"), ("dup", "y")].into_iter().collect();
        map.remove(b"dup");
        map.remove(b"absent");
        assert_eq!(names_values(&map), [("b".to_string(), "2".to_string())]);
        assert_eq!(map.byte_size(), 2);
    }

    #[test]
    fn the_byte_size_follows_every_change() {
        let mut map: HeaderMap = [("a", "1"), ("dup", "x"), ("b", "22"), ("dup", "yy")].into_iter().collect();
        let sum = |m: &HeaderMap| m.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>();
        assert_eq!(map.byte_size(), sum(&map));
        map.replace(b"dup", b"zzz");
        assert_eq!(map.byte_size(), sum(&map));
        map.replace(b"new", b"v");
        map.append_lowercase(Bytes::from_static(b"c"), Bytes::from_static(b"3"));
        assert_eq!(map.byte_size(), sum(&map));
        map.remove(b"a");
        assert_eq!(map.byte_size(), sum(&map));
        map.set_all([(&b"x"[..], &b"y"[..])]);
        assert_eq!((map.byte_size(), sum(&map)), (2, 2));
    }
}
