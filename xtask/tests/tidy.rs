//! Tidy checks on the workspace's sources, in the style of rust-analyzer's
//! `tidy.rs`: what ARCHITECTURE.md promises about the code's shape, checked
//! on every test run rather than remembered in review.
//!
//! - No import cycle between the top-level modules of a crate ("no module
//!   pair imports each other").
//! - Every module file starts with a `//!` doc comment saying what it is.
//! - No source file is over [`MAX_LINES`] lines, unless it is declarative
//!   data listed in [`LONG_DATA_FILES`].
//!
//! Each rule is its own test, so a failure names the rule, and each reports
//! every violation at once. Only std: the checks read text, they do not
//! compile it.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Past this many lines a file is split, unless it is declarative data.
const MAX_LINES: usize = 1000;

/// Files allowed past [`MAX_LINES`] because they are declarative data, not
/// logic; relative to the workspace root.
const LONG_DATA_FILES: &[&str] = &[
    // The validated configuration's types: one struct or enum per Envoy message.
    "crates/ferry-config/src/model.rs",
];

#[test]
fn no_import_cycle_between_top_level_modules() {
    let mut violations = Vec::new();
    for krate in crates() {
        violations.extend(krate.import_cycles());
    }
    check("top-level modules that import each other (ARCHITECTURE.md: dependencies run one way)", &violations);
}

#[test]
fn every_module_file_starts_with_a_doc_comment() {
    let mut violations = Vec::new();
    for krate in crates() {
        for file in &krate.files {
            let first = file.text.lines().find(|line| !line.trim().is_empty()).unwrap_or("");
            if !first.trim_start().starts_with("//!") {
                violations.push(format!("{}/{}: the first line is not a `//!` comment", krate.src, file.path));
            }
        }
    }
    check("module files without a `//!` doc comment", &violations);
}

#[test]
fn no_source_file_is_too_long() {
    let mut violations = Vec::new();
    let mut seen = BTreeSet::new();
    for krate in crates() {
        for file in &krate.files {
            let path = format!("{}/{}", krate.src, file.path);
            let lines = file.text.lines().count();
            if LONG_DATA_FILES.contains(&path.as_str()) {
                // An allowance outlives its reason once the file shrinks.
                if lines <= MAX_LINES {
                    violations.push(format!("{path}: {lines} lines; remove it from LONG_DATA_FILES"));
                }
                seen.insert(path);
            } else if lines > MAX_LINES {
                violations.push(format!("{path}: {lines} lines (at most {MAX_LINES}); split it"));
            }
        }
    }
    for allowed in LONG_DATA_FILES.iter().filter(|allowed| !seen.contains(**allowed)) {
        violations.push(format!("{allowed}: no such source file; remove it from LONG_DATA_FILES"));
    }
    check("source files over the line limit", &violations);
}

/// Fails with every violation of a rule, so one run shows all there is to fix.
fn check(rule: &str, violations: &[String]) {
    assert!(violations.is_empty(), "{} {rule}:\n{}\n", violations.len(), violations.join("\n"));
}

/// The workspace root: this package is `xtask/`, one level down.
fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the workspace").to_path_buf()
}

/// Every crate checked: each `crates/*/` with a `src/`, and xtask.
fn crates() -> Vec<Crate> {
    let root = workspace_root();
    let mut srcs: Vec<String> = fs::read_dir(root.join("crates"))
        .expect("read crates/")
        .map(|entry| entry.expect("read crates/").file_name().to_string_lossy().into_owned())
        .map(|name| format!("crates/{name}/src"))
        .filter(|src| root.join(src).is_dir())
        .collect();
    srcs.sort();
    srcs.push("xtask/src".to_owned());
    srcs.into_iter().map(|src| Crate::read(&root, src)).collect()
}

/// One crate's sources.
struct Crate {
    /// Its `src/` directory relative to the workspace root, for messages.
    src: String,
    /// Every `.rs` file under `src/`, sorted by path.
    files: Vec<SourceFile>,
}

/// One `.rs` file under a crate's `src/`.
struct SourceFile {
    /// The path relative to `src/`, with `/` separators.
    path: String,
    text: String,
}

impl SourceFile {
    /// The module the file defines, as a path from the crate root: `a.rs`
    /// and `a/mod.rs` are `[a]`, `a/b.rs` is `[a, b]`, the root is `[]`.
    fn module_path(&self) -> Vec<&str> {
        let mut segments: Vec<&str> = self.path.split('/').collect();
        let file = segments.pop().unwrap_or_default();
        let is_root = segments.is_empty() && (file == "lib.rs" || file == "main.rs");
        if file != "mod.rs" && !is_root {
            segments.push(file.trim_end_matches(".rs"));
        }
        segments
    }
}

impl Crate {
    fn read(root: &Path, src: String) -> Crate {
        let dir = root.join(&src);
        let mut paths = Vec::new();
        rust_files(&dir, &mut paths);
        paths.sort();
        let files = paths
            .into_iter()
            .map(|path| {
                let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                let relative = path.strip_prefix(&dir).expect("a file under src/");
                let segments: Vec<_> = relative.components().map(|c| c.as_os_str().to_string_lossy()).collect();
                SourceFile { path: segments.join("/"), text }
            })
            .collect();
        Crate { src, files }
    }

    /// Every cycle among the crate's top-level modules, each with one
    /// `file:line` per import that closes it, so it is clear what to move.
    fn import_cycles(&self) -> Vec<String> {
        let graph = self.module_graph();
        let mut reported: BTreeSet<String> = BTreeSet::new();
        let mut cycles = Vec::new();
        for module in graph.keys() {
            if reported.contains(module) {
                continue;
            }
            // Its strongly connected component: the modules it reaches that reach it back.
            let component: BTreeSet<&String> = reachable(&graph, module)
                .into_iter()
                .filter(|other| other == &module || reachable(&graph, other).contains(module))
                .collect();
            if component.len() < 2 {
                continue;
            }
            let names: Vec<&str> = component.iter().map(|m| m.as_str()).collect();
            let mut report = format!("{}: {} import each other:", self.src, names.join(", "));
            for from in &component {
                for (to, place) in graph[*from].iter().filter(|(to, _)| component.contains(to)) {
                    report.push_str(&format!("\n    {from} -> {to}: {place}"));
                }
            }
            cycles.push(report);
            reported.extend(component.into_iter().cloned());
        }
        cycles
    }

    /// Which top-level module imports which: for each edge, where it is
    /// first spelled. A name the crate root re-exports (`pub use a::X`)
    /// counts as its module: `crate::X` depends on `a` all the same.
    fn module_graph(&self) -> BTreeMap<String, BTreeMap<String, String>> {
        let mut graph: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let top_level: BTreeSet<&str> = self.files.iter().filter_map(|f| f.module_path().first().copied()).collect();
        for module in &top_level {
            graph.insert((*module).to_owned(), BTreeMap::new());
        }
        let reexported: BTreeMap<String, String> = self
            .files
            .iter()
            .filter(|f| f.module_path().is_empty())
            .flat_map(|root| reexports(&root.text))
            .filter(|(_, module)| top_level.contains(module.as_str()))
            .collect();
        for file in &self.files {
            let module_path = file.module_path();
            let Some(&from) = module_path.first() else { continue };
            for mention in root_mentions(&file.text, &module_path) {
                let (to, via) = if top_level.contains(mention.name.as_str()) {
                    (mention.name.as_str(), String::new())
                } else if let Some(module) = reexported.get(&mention.name) {
                    (module.as_str(), format!(" (crate::{}, re-exported)", mention.name))
                } else {
                    continue; // An item of the crate root itself.
                };
                if to != from {
                    let place = format!("{}/{}:{}{via}", self.src, file.path, mention.line);
                    graph.get_mut(from).expect("a top-level module").entry(to.to_owned()).or_insert(place);
                }
            }
        }
        graph
    }
}

/// Collects every `.rs` file under `dir`.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.expect("read a source directory").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

/// The modules reachable from `start` by one import or more. The graphs are
/// a few dozen modules: a search from each is simpler than Tarjan's and fast.
fn reachable<'a>(graph: &'a BTreeMap<String, BTreeMap<String, String>>, start: &str) -> BTreeSet<&'a String> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&String> = graph[start].keys().collect();
    while let Some(module) = todo.pop() {
        if seen.insert(module) {
            todo.extend(graph[module].keys());
        }
    }
    seen
}

/// A path into the crate root: its first segment after `crate::`, and its line.
struct Mention {
    name: String,
    line: usize,
}

/// Every path into the crate root that the file's code (not its comments,
/// not its `#[cfg(test)]` items: tests may import anything) spells:
/// `crate::a::…`, each item of `crate::{a::…, b}`, `super::…` chains that
/// climb to the root, and serde's `with = "crate::a::…"`.
fn root_mentions(text: &str, module_path: &[&str]) -> Vec<Mention> {
    let tokens = Tokens(lex(text));
    let mut mentions = Vec::new();
    let mut depth: usize = 0;
    // The brace depth each inline `mod name {` we are in opened at: each
    // is one more level for `super` to climb.
    let mut inline_modules: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < tokens.0.len() {
        if tokens.is_cfg_test(i) {
            i = tokens.skip_test_item(i + CFG_TEST.len());
            continue;
        }
        let token = &tokens.0[i];
        match (token.kind, token.text.as_str()) {
            (Kind::Punct, "{") => depth += 1,
            (Kind::Punct, "}") => {
                depth = depth.saturating_sub(1);
                if inline_modules.last() == Some(&depth) {
                    inline_modules.pop();
                }
            }
            (Kind::Ident, "mod") if tokens.ident(i + 1).is_some() && tokens.punct(i + 2, "{") => {
                inline_modules.push(depth);
                depth += 1;
                i += 3;
                continue;
            }
            // Not `$crate` (a macro's), nor `pub(in crate::…)` (a visibility, not a use).
            (Kind::Ident, "crate")
                if tokens.punct(i + 1, "::")
                    && !tokens.punct_before(i, 1, "$")
                    && !(tokens.keyword_before(i, 1, "in") && tokens.punct_before(i, 2, "(")) =>
            {
                mentions.extend(tokens.first_segments(i + 2));
            }
            // The first `super` of a chain: it reaches the root after as many as we are deep.
            (Kind::Ident, "super") if !tokens.punct_before(i, 1, "::") => {
                let (mut climbs, mut j) = (1, i + 1);
                while tokens.punct(j, "::") && tokens.keyword(j + 1, "super") {
                    climbs += 1;
                    j += 2;
                }
                if tokens.punct(j, "::") && climbs == module_path.len() + inline_modules.len() {
                    mentions.extend(tokens.first_segments(j + 1));
                }
            }
            (Kind::Str, contents) => {
                if let Some(name) = crate_path_in_string(contents) {
                    mentions.push(Mention { name: name.to_owned(), line: token.line });
                }
            }
            _ => {}
        }
        i += 1;
    }
    mentions
}

/// The module of a string that is a whole path `crate::a::…`, as serde's
/// `with`, `deserialize_with` and `default` attributes name functions.
fn crate_path_in_string(text: &str) -> Option<&str> {
    let rest = text.strip_prefix("crate::")?;
    let is_ident = |s: &str| s.starts_with(|c: char| c.is_alphabetic() || c == '_') && s.chars().all(is_ident_char);
    rest.split("::").all(is_ident).then(|| rest.split("::").next().unwrap_or_default())
}

/// What the crate root's `use` items bring in, by the name they bring:
/// `pub use a::{X, y::Z as W}` maps `X` and `W` to `a`. Globs are not
/// followed (their names would need the module's items).
fn reexports(root: &str) -> Vec<(String, String)> {
    let tokens = Tokens(lex(root));
    let mut names = Vec::new();
    let mut depth = 0;
    let mut i = 0;
    while i < tokens.0.len() {
        if tokens.punct(i, "{") {
            depth += 1;
        } else if tokens.punct(i, "}") {
            depth -= 1;
        } else if depth == 0 && tokens.keyword(i, "use") {
            let mut j = i + 1;
            if tokens.keyword(j, "crate") || tokens.keyword(j, "self") {
                j += 2;
            }
            if let Some(module) = tokens.ident(j).filter(|_| tokens.punct(j + 1, "::")) {
                // The leaves: a name right before `,`, `}` or the `;` that ends the item.
                while j < tokens.0.len() && !tokens.punct(j, ";") {
                    let at_leaf = [",", "}", ";"].iter().any(|end| tokens.punct(j + 1, end));
                    if let Some(name) = tokens.ident(j).filter(|name| at_leaf && *name != "self") {
                        names.push((name.to_owned(), module.to_owned()));
                    }
                    j += 1;
                }
                i = j;
            }
        }
        i += 1;
    }
    names
}

/// `#[cfg(test)]`, token by token.
const CFG_TEST: [&str; 7] = ["#", "[", "cfg", "(", "test", ")", "]"];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Ident,
    Punct,
    /// A string literal's contents (raw or not).
    Str,
}

#[derive(Debug)]
struct Token {
    kind: Kind,
    /// An identifier or keyword, `::` or one punctuation character, or a string's contents.
    text: String,
    /// Where it starts, from 1.
    line: usize,
}

/// A file's tokens, with the look-ups the scans need; an index out of range matches nothing.
struct Tokens(Vec<Token>);

impl Tokens {
    fn is(&self, i: usize, kind: Kind, text: &str) -> bool {
        self.0.get(i).is_some_and(|token| token.kind == kind && token.text == text)
    }

    fn punct(&self, i: usize, text: &str) -> bool {
        self.is(i, Kind::Punct, text)
    }

    fn keyword(&self, i: usize, text: &str) -> bool {
        self.is(i, Kind::Ident, text)
    }

    fn punct_before(&self, i: usize, back: usize, text: &str) -> bool {
        i >= back && self.punct(i - back, text)
    }

    fn keyword_before(&self, i: usize, back: usize, text: &str) -> bool {
        i >= back && self.keyword(i - back, text)
    }

    fn ident(&self, i: usize) -> Option<&str> {
        self.0.get(i).filter(|token| token.kind == Kind::Ident).map(|token| token.text.as_str())
    }

    /// The index of the `}` closing the `{` at `open` (the end, if unbalanced).
    fn matching_brace(&self, open: usize) -> usize {
        let mut depth = 0;
        for i in open..self.0.len() {
            if self.punct(i, "{") {
                depth += 1;
            } else if self.punct(i, "}") {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
        }
        self.0.len()
    }

    fn is_cfg_test(&self, i: usize) -> bool {
        let matches = |k: usize, text: &str| self.0.get(i + k).is_some_and(|t| t.kind != Kind::Str && t.text == text);
        CFG_TEST.iter().enumerate().all(|(k, &text)| matches(k, text))
    }

    /// Skips the item after a `#[cfg(test)]` (the tokens from `i`) if it is
    /// a module, function, `use`, `impl`, `const` or `static`; returns where
    /// to go on. Other items (a field, a statement) are scanned as usual.
    fn skip_test_item(&self, i: usize) -> usize {
        let mut j = i;
        // More attributes, then a visibility.
        while self.punct(j, "#") && self.punct(j + 1, "[") {
            let mut depth = 0;
            while j < self.0.len() {
                if self.punct(j, "[") {
                    depth += 1;
                } else if self.punct(j, "]") {
                    depth -= 1;
                    if depth == 0 {
                        break;
                    }
                }
                j += 1;
            }
            j += 1;
        }
        if self.keyword(j, "pub") {
            j += 1;
            if self.punct(j, "(") {
                while j < self.0.len() && !self.punct(j, ")") {
                    j += 1;
                }
                j += 1;
            }
        }
        if !["mod", "fn", "use", "impl", "const", "static"].iter().any(|item| self.keyword(j, item)) {
            return i;
        }
        // The item ends at its `;` or at the brace closing its body, whichever comes first.
        while j < self.0.len() {
            if self.punct(j, ";") {
                return j + 1;
            }
            if self.punct(j, "{") {
                return self.matching_brace(j) + 1;
            }
            j += 1;
        }
        j
    }

    /// The first segment of the path going on at `j` (just after a root's
    /// `::`), or of each item of the group `{…}` there. `self` and `*`
    /// name no module.
    fn first_segments(&self, j: usize) -> Vec<Mention> {
        let mention = |k: usize| match self.ident(k) {
            Some(name) if name != "self" => Some(Mention { name: name.to_owned(), line: self.0[k].line }),
            _ => None,
        };
        if !self.punct(j, "{") {
            return mention(j).into_iter().collect();
        }
        let end = self.matching_brace(j);
        let mut mentions = Vec::new();
        let (mut depth, mut item_starts) = (0, true);
        for k in j + 1..end {
            if depth == 0 && item_starts {
                mentions.extend(mention(k));
            }
            item_starts = false;
            if self.punct(k, "{") {
                depth += 1;
            } else if self.punct(k, "}") {
                depth -= 1;
            } else if depth == 0 && self.punct(k, ",") {
                item_starts = true;
            }
        }
        mentions
    }
}

fn is_ident_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Splits Rust source into identifiers, punctuation and string literals,
/// dropping comments (so a path in a doc comment is no import), numbers and
/// character literals. Only as much of Rust as the scans need.
fn lex(text: &str) -> Vec<Token> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let (mut i, mut line) = (0, 1);
    while i < chars.len() {
        let c = chars[i];
        let start_line = line;
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if chars[i..].starts_with(&['/', '/']) {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if chars[i..].starts_with(&['/', '*']) {
            i = skip_block_comment(&chars, i, &mut line);
        } else if c == '"' {
            let (contents, end) = quoted(&chars, i + 1, &mut line);
            tokens.push(Token { kind: Kind::Str, text: contents, line: start_line });
            i = end;
        } else if c == '\'' {
            // A character literal is skipped; a lifetime's quote too, and its name lexes as an identifier.
            if chars.get(i + 1) == Some(&'\\') {
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if chars.get(i + 2) == Some(&'\'') {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_alphabetic() || c == '_' {
            let mut end = i;
            while end < chars.len() && is_ident_char(chars[end]) {
                end += 1;
            }
            let word: String = chars[i..end].iter().collect();
            let next = chars.get(end).copied();
            let after = chars.get(end + 1).copied();
            if matches!(word.as_str(), "r" | "br" | "cr")
                && (next == Some('"') || (next == Some('#') && matches!(after, Some('#' | '"'))))
            {
                let (contents, after_string) = raw_string(&chars, end, &mut line);
                tokens.push(Token { kind: Kind::Str, text: contents, line: start_line });
                i = after_string;
            } else if word == "r" && next == Some('#') && after.is_some_and(|c| c.is_alphabetic() || c == '_') {
                // A raw identifier, `r#name`.
                let mut name_end = end + 1;
                while name_end < chars.len() && is_ident_char(chars[name_end]) {
                    name_end += 1;
                }
                tokens.push(Token { kind: Kind::Ident, text: chars[end + 1..name_end].iter().collect(), line });
                i = name_end;
            } else {
                tokens.push(Token { kind: Kind::Ident, text: word, line });
                i = end;
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && is_ident_char(chars[i]) {
                i += 1;
            }
        } else if chars[i..].starts_with(&[':', ':']) {
            tokens.push(Token { kind: Kind::Punct, text: "::".to_owned(), line });
            i += 2;
        } else {
            tokens.push(Token { kind: Kind::Punct, text: c.to_string(), line });
            i += 1;
        }
    }
    tokens
}

/// Skips a block comment starting at `i` (they nest); returns the index after it.
fn skip_block_comment(chars: &[char], mut i: usize, line: &mut usize) -> usize {
    let mut depth = 0;
    while i < chars.len() {
        if chars[i..].starts_with(&['/', '*']) {
            depth += 1;
            i += 2;
        } else if chars[i..].starts_with(&['*', '/']) {
            depth -= 1;
            i += 2;
            if depth == 0 {
                break;
            }
        } else {
            if chars[i] == '\n' {
                *line += 1;
            }
            i += 1;
        }
    }
    i
}

/// A string's contents from `start` (after its opening quote), escapes left
/// as written; returns them and the index after the closing quote.
fn quoted(chars: &[char], start: usize, line: &mut usize) -> (String, usize) {
    let mut i = start;
    while i < chars.len() && chars[i] != '"' {
        if chars[i] == '\n' {
            *line += 1;
        }
        if chars[i] == '\\' {
            i += 1;
            if chars.get(i) == Some(&'\n') {
                *line += 1;
            }
        }
        i += 1;
    }
    (chars[start..i.min(chars.len())].iter().collect(), i + 1)
}

/// A raw string's contents from `start` (its first `#` or its quote);
/// returns them and the index after the closing quote and hashes.
fn raw_string(chars: &[char], start: usize, line: &mut usize) -> (String, usize) {
    let hashes = chars[start..].iter().take_while(|c| **c == '#').count();
    let open = start + hashes + 1;
    let mut i = open;
    while i < chars.len() {
        if chars[i] == '"' && chars[i + 1..].iter().take(hashes).filter(|c| **c == '#').count() == hashes {
            break;
        }
        if chars[i] == '\n' {
            *line += 1;
        }
        i += 1;
    }
    let end = i.min(chars.len());
    (chars[open.min(end)..end].iter().collect(), end + 1 + hashes)
}
