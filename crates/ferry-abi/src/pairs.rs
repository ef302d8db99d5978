//! The "pairs" encoding of header maps, used by `proxy_get_header_map_pairs`,
//! `proxy_set_header_map_pairs`, `proxy_send_local_response`, `proxy_http_call`
//! and gRPC metadata.
//!
//! Layout (all integers little-endian `u32`):
//!
//! ```text
//! count
//! count × (key_len, value_len)          lengths exclude the NUL terminators
//! count × (key bytes, 0x00, value bytes, 0x00)
//! ```
//!
//! An empty map is encoded as nothing at all (size 0), which is what Envoy
//! hands out; decoding also accepts `count = 0` and a lone `0x00` byte.

use thiserror::Error;

/// Most pairs a decoded map may hold. Same bound as Envoy's host, so a plugin
/// that works there works here; it also caps what one call can make the host
/// allocate.
pub const MAX_PAIRS: usize = 1024;

/// Largest encoded map the host decodes (1 MiB), for the same reasons.
pub const MAX_ENCODED_BYTES: usize = 1 << 20;

/// Bytes taken by the count field and by one pair's two length fields.
const COUNT_BYTES: usize = 4;
const LENGTHS_BYTES: usize = 8;

/// One decoded `(name, value)` pair, borrowed from the buffer.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Why a pairs buffer could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PairsError {
    /// Shorter than its own header says.
    #[error("pairs buffer truncated: {0}")]
    Truncated(&'static str),
    /// A key or value is not followed by its NUL terminator.
    #[error("pairs buffer malformed: missing NUL terminator after pair {0}")]
    MissingTerminator(usize),
    /// Bytes remain after the last pair.
    #[error("pairs buffer malformed: {0} trailing bytes")]
    TrailingBytes(usize),
    /// More pairs or bytes than the host accepts.
    #[error("pairs buffer too large: {0}")]
    TooLarge(&'static str),
    /// An output buffer of the wrong size.
    #[error("pairs output buffer is {actual} bytes, the encoding {expected}")]
    WrongSize {
        /// The encoding's size.
        expected: usize,
        /// The buffer's.
        actual: usize,
    },
}

/// Size of the encoding of `pairs`.
pub fn encoded_len<'a, I>(pairs: I) -> usize
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
{
    let mut count = 0usize;
    let mut size = COUNT_BYTES;
    for (k, v) in pairs {
        count += 1;
        size += LENGTHS_BYTES + k.len() + 1 + v.len() + 1;
    }
    if count == 0 { 0 } else { size }
}

/// Writes the encoding of `pairs` into `out`, which must be exactly
/// [`encoded_len`] bytes long (the host writes straight into plugin memory).
///
/// # Errors
/// [`PairsError::WrongSize`] if `out` is not exactly that long; nothing is
/// written then.
pub fn encode_into<'a, I>(out: &mut [u8], pairs: I) -> Result<(), PairsError>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    I::IntoIter: Clone,
{
    let pairs = pairs.into_iter();
    let expected = encoded_len(pairs.clone());
    if expected != out.len() {
        return Err(PairsError::WrongSize { expected, actual: out.len() });
    }
    if out.is_empty() {
        return Ok(());
    }
    let count = pairs.clone().count();
    let mut header = COUNT_BYTES;
    let mut data = COUNT_BYTES + count * LENGTHS_BYTES;
    out[..COUNT_BYTES].copy_from_slice(&(count as u32).to_le_bytes());
    for (k, v) in pairs {
        out[header..header + 4].copy_from_slice(&(k.len() as u32).to_le_bytes());
        out[header + 4..header + 8].copy_from_slice(&(v.len() as u32).to_le_bytes());
        header += LENGTHS_BYTES;
        for part in [k, v] {
            out[data..data + part.len()].copy_from_slice(part);
            data += part.len();
            out[data] = 0;
            data += 1;
        }
    }
    Ok(())
}

/// Encodes `pairs` into a new vector.
pub fn encode<'a, I>(pairs: I) -> Vec<u8>
where
    I: IntoIterator<Item = (&'a [u8], &'a [u8])>,
    I::IntoIter: Clone,
{
    let pairs = pairs.into_iter();
    let mut out = vec![0; encoded_len(pairs.clone())];
    // The buffer has exactly the encoded length: this cannot fail.
    let _ = encode_into(&mut out, pairs);
    out
}

/// Decodes a pairs buffer into borrowed `(key, value)` slices, in order.
///
/// # Errors
/// Truncated or malformed input, or more than [`MAX_PAIRS`] pairs or
/// [`MAX_ENCODED_BYTES`] bytes.
pub fn decode(buf: &[u8]) -> Result<Vec<Pair<'_>>, PairsError> {
    if buf.is_empty() || buf == [0] {
        return Ok(Vec::new());
    }
    if buf.len() > MAX_ENCODED_BYTES {
        return Err(PairsError::TooLarge("more than 1 MiB"));
    }
    let count = read_u32(buf, 0).ok_or(PairsError::Truncated("no pair count"))? as usize;
    if count > MAX_PAIRS {
        return Err(PairsError::TooLarge("more than 1024 pairs"));
    }
    let mut data = COUNT_BYTES
        .checked_add(count * LENGTHS_BYTES)
        .filter(|&end| end <= buf.len())
        .ok_or(PairsError::Truncated("lengths table"))?;
    let mut pairs = Vec::with_capacity(count);
    for i in 0..count {
        let at = COUNT_BYTES + i * LENGTHS_BYTES;
        let key_len = read_u32(buf, at).ok_or(PairsError::Truncated("lengths table"))? as usize;
        let value_len = read_u32(buf, at + 4).ok_or(PairsError::Truncated("lengths table"))? as usize;
        let key = take_terminated(buf, &mut data, key_len, i)?;
        let value = take_terminated(buf, &mut data, value_len, i)?;
        pairs.push((key, value));
    }
    if data != buf.len() {
        return Err(PairsError::TrailingBytes(buf.len() - data));
    }
    Ok(pairs)
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

/// Takes `len` bytes at `*at` followed by a NUL, advancing `*at` past it.
fn take_terminated<'a>(buf: &'a [u8], at: &mut usize, len: usize, pair: usize) -> Result<&'a [u8], PairsError> {
    let end = at.checked_add(len).ok_or(PairsError::Truncated("pair data"))?;
    let bytes = buf.get(*at..end).ok_or(PairsError::Truncated("pair data"))?;
    match buf.get(end) {
        Some(0) => {}
        Some(_) => return Err(PairsError::MissingTerminator(pair)),
        None => return Err(PairsError::Truncated("pair data")),
    }
    *at = end + 1;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs<'a>(p: &'a [(&'a str, &'a str)]) -> Vec<(&'a [u8], &'a [u8])> {
        p.iter().map(|(k, v)| (k.as_bytes(), v.as_bytes())).collect()
    }

    #[test]
    fn encodes_the_layout_of_the_spec() {
        let encoded = encode(pairs(&[("a", "1"), ("b", "22")]));
        assert_eq!(
            encoded,
            [
                2, 0, 0, 0, // count
                1, 0, 0, 0, 1, 0, 0, 0, // a: 1
                1, 0, 0, 0, 2, 0, 0, 0, // b: 22
                b'a', 0, b'1', 0, b'b', 0, b'2', b'2', 0,
            ]
        );
        assert_eq!(encoded_len(pairs(&[("a", "1"), ("b", "22")])), encoded.len());
    }

    #[test]
    fn round_trips_including_empty_keys_values_and_binary_bytes() {
        let original: Vec<(&[u8], &[u8])> = vec![
            (b":authority", b"localhost:18000"),
            (b"", b""),
            (b"x-bin", b"\xff\x01 value"),
            (b"dup", b"1"),
            (b"dup", b"2"),
        ];
        let encoded = encode(original.iter().copied());
        assert_eq!(decode(&encoded).unwrap(), original);
    }

    #[test]
    fn empty_map_is_zero_bytes_and_all_empty_forms_decode() {
        assert!(encode(Vec::<(&[u8], &[u8])>::new()).is_empty());
        assert!(decode(&[]).unwrap().is_empty());
        assert!(decode(&[0]).unwrap().is_empty());
        assert!(decode(&[0, 0, 0, 0]).unwrap().is_empty());
    }

    #[test]
    fn rejects_malformed_input() {
        let good = encode(pairs(&[("key", "value")]));
        // Every strict prefix is truncated.
        for cut in 2..good.len() {
            assert!(decode(&good[..cut]).is_err(), "prefix of {cut} bytes decoded");
        }
        let mut no_nul = good.clone();
        let last = no_nul.len() - 1;
        no_nul[last] = b'!';
        assert_eq!(decode(&no_nul), Err(PairsError::MissingTerminator(0)));
        let mut trailing = good.clone();
        trailing.push(7);
        assert_eq!(decode(&trailing), Err(PairsError::TrailingBytes(1)));
        // A count that would overflow the lengths table.
        assert!(decode(&[0xff, 0xff, 0xff, 0x7f, 0, 0]).is_err());
        // Lengths that point past the end, including ones that overflow.
        let mut huge = vec![1, 0, 0, 0];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        huge.extend_from_slice(&[0, 0]);
        assert!(decode(&huge).is_err());
        let too_many = (MAX_PAIRS as u32 + 1).to_le_bytes();
        assert_eq!(decode(&too_many), Err(PairsError::TooLarge("more than 1024 pairs")));
    }
}
