//! The gzip, brotli and zstd streams the compression filters run: each
//! chunk in, what the library gives back out, the end closing the stream.

use std::io::{self, Write};

use ferry_config::{EncoderSettings, Encoding};

/// A writer into memory that refuses to grow past `cap` bytes (a
/// decompression bomb stops there).
pub(super) struct Capped {
    data: Vec<u8>,
    cap: usize,
}

impl Capped {
    fn new(cap: usize) -> Self {
        Capped { data: Vec::new(), cap }
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.data)
    }
}

impl Write for Capped {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.data.len() + buf.len() > self.cap {
            return Err(io::Error::other(format!("the decoded body is larger than {} bytes", self.cap)));
        }
        self.data.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The buffer the brotli streams work through (as Envoy's default `chunk_size`).
const BROTLI_BUFFER: usize = 4096;

/// A compressing stream.
pub(super) enum Encoder {
    Gzip(flate2::write::GzEncoder<Capped>),
    Brotli(Box<brotli::CompressorWriter<Capped>>),
    Zstd(zstd::stream::write::Encoder<'static, Capped>),
}

impl Encoder {
    pub(super) fn new(settings: &EncoderSettings, cap: usize) -> io::Result<Self> {
        let out = Capped::new(cap);
        Ok(match settings.encoding {
            Encoding::Gzip => {
                let level = flate2::Compression::new(settings.level.clamp(0, 9) as u32);
                Encoder::Gzip(flate2::write::GzEncoder::new(out, level))
            }
            Encoding::Brotli => Encoder::Brotli(Box::new(brotli::CompressorWriter::new(
                out,
                BROTLI_BUFFER,
                settings.level as u32,
                settings.window_bits,
            ))),
            Encoding::Zstd => {
                let mut encoder = zstd::stream::write::Encoder::new(out, settings.level)?;
                encoder.include_checksum(settings.checksum)?;
                Encoder::Zstd(encoder)
            }
        })
    }

    /// Compresses `data` and flushes, so that what came in so far can be
    /// decoded from what went out (as Envoy's compressor flushes each chunk).
    pub(super) fn encode(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(e.get_mut().take())
            }
            Encoder::Brotli(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(e.get_mut().take())
            }
            Encoder::Zstd(e) => {
                e.write_all(data)?;
                e.flush()?;
                Ok(e.get_mut().take())
            }
        }
    }

    /// Ends the stream: its last bytes.
    pub(super) fn finish(self) -> io::Result<Vec<u8>> {
        Ok(match self {
            Encoder::Gzip(e) => e.finish()?.take(),
            Encoder::Brotli(e) => e.into_inner().take(),
            Encoder::Zstd(e) => e.finish()?.take(),
        })
    }
}

/// A decompressing stream.
pub(super) enum Decoder {
    Gzip(flate2::write::MultiGzDecoder<Capped>),
    Brotli(Box<brotli::DecompressorWriter<Capped>>),
    Zstd(zstd::stream::write::Decoder<'static, Capped>),
}

impl Decoder {
    /// A stream whose output stops at `cap` bytes.
    pub(super) fn new(encoding: Encoding, cap: usize) -> io::Result<Self> {
        let out = Capped::new(cap);
        Ok(match encoding {
            Encoding::Gzip => Decoder::Gzip(flate2::write::MultiGzDecoder::new(out)),
            Encoding::Brotli => Decoder::Brotli(Box::new(brotli::DecompressorWriter::new(out, BROTLI_BUFFER))),
            Encoding::Zstd => Decoder::Zstd(zstd::stream::write::Decoder::new(out)?),
        })
    }

    /// Decodes `data`: what it gives so far.
    pub(super) fn decode(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
        match self {
            Decoder::Gzip(d) => {
                d.write_all(data)?;
                d.flush()?;
                Ok(d.get_mut().take())
            }
            Decoder::Brotli(d) => {
                d.write_all(data)?;
                d.flush()?;
                Ok(d.get_mut().take())
            }
            Decoder::Zstd(d) => {
                d.write_all(data)?;
                d.flush()?;
                Ok(d.get_mut().take())
            }
        }
    }

    /// Ends the stream: its last bytes, or an error if it was cut short.
    pub(super) fn finish(self) -> io::Result<Vec<u8>> {
        match self {
            Decoder::Gzip(d) => Ok(d.finish()?.take()),
            Decoder::Brotli(mut d) => {
                d.close()?;
                Ok(d.get_mut().take())
            }
            Decoder::Zstd(mut d) => {
                d.flush()?;
                Ok(d.get_mut().take())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(encoding: Encoding, level: i32) {
        let settings = EncoderSettings { encoding, level, window_bits: 18, checksum: true };
        let text = b"the same words again and again, the same words again and again".repeat(50);
        let mut encoder = Encoder::new(&settings, usize::MAX).unwrap();
        let mut coded = Vec::new();
        for piece in text.chunks(700) {
            coded.extend(encoder.encode(piece).unwrap());
        }
        coded.extend(encoder.finish().unwrap());
        assert!(coded.len() < text.len() / 4, "{encoding:?} compresses repeated text");
        let mut decoder = Decoder::new(encoding, usize::MAX).unwrap();
        let mut plain = Vec::new();
        for piece in coded.chunks(100) {
            plain.extend(decoder.decode(piece).unwrap());
        }
        plain.extend(decoder.finish().unwrap());
        assert_eq!(plain, text);
    }

    #[test]
    fn gzip_round_trips_in_pieces() {
        round_trip(Encoding::Gzip, 6);
    }

    #[test]
    fn brotli_round_trips_in_pieces() {
        round_trip(Encoding::Brotli, 3);
    }

    #[test]
    fn zstd_round_trips_in_pieces() {
        round_trip(Encoding::Zstd, 3);
    }

    #[test]
    fn a_bomb_stops_at_the_cap() {
        let settings = EncoderSettings { encoding: Encoding::Gzip, level: 9, window_bits: 0, checksum: false };
        let mut encoder = Encoder::new(&settings, usize::MAX).unwrap();
        let mut coded = encoder.encode(&vec![0u8; 1 << 20]).unwrap();
        coded.extend(encoder.finish().unwrap());
        let mut decoder = Decoder::new(Encoding::Gzip, 1000).unwrap();
        assert!(decoder.decode(&coded).is_err());
    }

    #[test]
    fn garbage_is_an_error() {
        for encoding in [Encoding::Gzip, Encoding::Brotli, Encoding::Zstd] {
            let mut decoder = Decoder::new(encoding, usize::MAX).unwrap();
            let fed = decoder.decode(b"this is not compressed at all, not in any coding");
            assert!(fed.is_err() || decoder.finish().is_err(), "{encoding:?}");
        }
    }
}
