//! Bounds on what ferry reads before it parses: file kinds and sizes, and
//! the nesting depth of a YAML document.
//!
//! The YAML parser takes time that grows with the square of the nesting
//! depth (100,000 nested `[` took 23 s), and its deserializer refuses
//! anything past 128 levels anyway, so deep documents are refused by a
//! linear scan first. Files are read only when they are regular files and
//! no bigger than the cap for their kind: a FIFO, `/dev/zero` or a
//! multi-gigabyte file is an error naming the field, not a hang.

use std::io::Read;
use std::path::Path;

/// The largest configuration file ferry reads.
pub const MAX_CONFIG_BYTES: u64 = 32 << 20;

/// The largest Wasm module ferry reads from a file.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// The deepest nesting of flow collections (`[...]`, `{...}`) accepted.
/// Deeper than the deserializer's own limit (128), so that a document it
/// would refuse gets its error with a field path.
pub const MAX_FLOW_NESTING: usize = 256;

/// Reads `path` if it is a regular file of at most `cap` bytes.
///
/// # Errors
/// A message saying what is wrong: missing, not a regular file, too big.
pub fn read_file(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let cannot = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    // Look before opening: opening a FIFO waits for a writer.
    if !std::fs::metadata(path).map_err(cannot)?.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let file = std::fs::File::open(path).map_err(cannot)?;
    let metadata = file.metadata().map_err(cannot)?;
    if !metadata.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if metadata.len() > cap {
        return Err(format!("{} is {} bytes, over the limit of {cap}", path.display(), metadata.len()));
    }
    // The file may grow between the check and the read.
    let mut bytes = Vec::with_capacity(usize::try_from(metadata.len()).unwrap_or(0));
    file.take(cap + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > cap {
        return Err(format!("{} grew past the limit of {cap} bytes while being read", path.display()));
    }
    Ok(bytes)
}

/// Refuses text nested deeper than [`MAX_FLOW_NESTING`] flow collections,
/// with the line where the limit was passed.
///
/// Outside flow collections a `[` or `{` counts where a collection can
/// start: after a blank (that includes after a tag or an anchor) or after
/// `:`, `-`, `,`, `?`; so brackets inside plain scalars such as `^[a-z]+$`
/// do not. Inside one, every opener counts (YAML allows none in plain
/// scalars there). Quoted scalars and comments are skipped.
pub(crate) fn check_nesting(text: &str) -> Result<(), String> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut previous = b'\n';
    let mut last = b'\n';
    let mut bytes = text.bytes().peekable();
    while let Some(byte) = bytes.next() {
        match byte {
            b'\n' => line += 1,
            b'\'' | b'"' if starts_quoted(previous, last, depth) => {
                let mut escaped = false;
                for inner in bytes.by_ref() {
                    if inner == b'\n' {
                        line += 1;
                    }
                    match (byte, inner, escaped) {
                        (b'"', b'\\', false) => escaped = true,
                        (_, close, false) if close == byte => break,
                        _ => escaped = false,
                    }
                }
                // `''` inside a single-quoted scalar is an escaped quote: the
                // next loop turn sees `'` after a value and skips again.
                (previous, last) = (b'a', b'a');
                continue;
            }
            b'#' if matches!(last, b' ' | b'\t' | b'\n') => {
                for inner in bytes.by_ref() {
                    if inner == b'\n' {
                        line += 1;
                        break;
                    }
                }
                (previous, last) = (b'\n', b'\n');
                continue;
            }
            b'[' | b'{' if depth > 0 || starts_value(previous) || matches!(last, b' ' | b'\t') => {
                depth += 1;
                if depth > MAX_FLOW_NESTING {
                    return Err(format!("nested deeper than {MAX_FLOW_NESTING} levels at line {line}"));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if !matches!(byte, b' ' | b'\t') {
            previous = byte;
        }
        last = byte;
    }
    Ok(())
}

/// Whether a flow collection may start after `previous`, the last
/// character that was not a blank.
fn starts_value(previous: u8) -> bool {
    matches!(previous, b'\n' | b':' | b'-' | b',' | b'?' | b'[' | b'{')
}

/// Whether a quote here opens a quoted scalar, for YAML, not only a quote
/// inside a plain scalar (`-'x` and `a:'x` are plain): skipping a quote the
/// parser does not skip could hide nesting from the scan.
fn starts_quoted(previous: u8, last: u8, depth: usize) -> bool {
    let after_blank = matches!(last, b' ' | b'\t' | b'\n');
    match previous {
        b'\n' | b'-' | b'?' => after_blank,
        b':' => after_blank || depth > 0,
        b',' | b'[' | b'{' => depth > 0,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deep_flow_collections_are_refused_with_their_line() {
        let deep = format!("a:\n  b: {}{}\n", "[".repeat(300), "]".repeat(300));
        let error = check_nesting(&deep).unwrap_err();
        assert!(error.contains("line 2"), "{error}");
        // A quote inside a plain scalar does not open a quoted scalar.
        let hidden = format!("a: -'x\nb: c'd\ne: {}{}\n", "[".repeat(300), "]".repeat(300));
        assert!(check_nesting(&hidden).is_err());
        let tagged = format!("a: !!seq {}{}\n", "[".repeat(300), "]".repeat(300));
        assert!(check_nesting(&tagged).is_err());
        let fine = format!("a: {}{}\n", "{x: ".repeat(100), "}".repeat(100));
        assert_eq!(check_nesting(&fine), Ok(()));
    }

    #[test]
    fn brackets_in_scalars_and_comments_do_not_count() {
        let regexes = "r: ^[a-z]+$\n".repeat(400);
        let quoted = format!("q: \"{}\"\ns: '{}'\n", "[".repeat(400), "{".repeat(400));
        let comment = format!("# {}\nk: v\n", "[".repeat(400));
        let flow = format!("f: [\"{}\", '{}']\n", "[".repeat(400), "{".repeat(400));
        for text in [regexes, quoted, comment, flow] {
            assert_eq!(check_nesting(&text), Ok(()), "{text}");
        }
    }

    #[test]
    fn only_regular_files_within_the_cap_are_read() {
        let dir = std::env::temp_dir().join(format!("ferry-input-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("small");
        std::fs::write(&file, b"12345").unwrap();
        assert_eq!(read_file(&file, 5).unwrap(), b"12345");
        assert!(read_file(&file, 4).unwrap_err().contains("over the limit of 4"));
        assert!(read_file(&dir, 100).unwrap_err().contains("not a regular file"));
        assert!(read_file(Path::new("/dev/zero"), 100).unwrap_err().contains("not a regular file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
