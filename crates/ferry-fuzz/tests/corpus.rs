//! The fuzz targets on stable: every input of the kept corpus
//! (`fuzz/corpus/<target>/`), then a stretch of seeded random inputs
//! (mutations of the corpus), so a regression shows in every test run.
//! Coverage-guided fuzzing runs with `cargo +nightly fuzz run <target>`
//! (see docs/reliability.md).

use std::path::PathBuf;

/// Random inputs per target on top of the corpus.
const RANDOM_INPUTS: usize = 300;

fn corpus(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    // A running fuzzer replaces corpus files as it shrinks them: skip the
    // ones gone between listing and reading.
    files.iter().filter_map(|f| std::fs::read(f).ok()).collect()
}

/// xorshift64*: enough randomness to mutate inputs, reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A corpus input with a few bytes flipped, inserted or cut.
fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..1 + rng.below(8) {
        match rng.below(3) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            1 => {
                let i = rng.below(data.len() + 1);
                data.insert(i, rng.next() as u8);
            }
            _ if !data.is_empty() => {
                let i = rng.below(data.len());
                data.truncate(i);
            }
            _ => {}
        }
    }
    data
}

fn replay(name: &str) {
    let (_, target) = ferry_fuzz::TARGETS.iter().find(|(n, _)| *n == name).unwrap();
    let inputs = corpus(name);
    assert!(!inputs.is_empty(), "the {name} corpus is empty");
    for input in &inputs {
        target(input);
    }
    let mut rng = Rng(0x5eed_f00d ^ name.len() as u64);
    for _ in 0..RANDOM_INPUTS {
        let seed = &inputs[rng.below(inputs.len())];
        target(&mutate(&mut rng, seed));
    }
}

#[test]
fn pairs_corpus() {
    replay("pairs");
}

#[test]
fn config_corpus() {
    replay("config");
}

#[test]
fn host_calls_corpus() {
    replay("host_calls");
}
