//! How passage and query text becomes index terms: a tokenizer that knows identifiers, then
//! the language's filters.
//!
//! Documentation and code name things `HashMap::entry`, `os.path.join`, `snake_case_names` or
//! `--request-timeout`. A plain word tokenizer cuts these at every punctuation mark and keeps
//! `hashmap` as one word, so a query for `entry` of a hash map finds it only by luck, and a query
//! for the whole name cannot prefer the passage that has it whole. [`IdentifierTokenizer`]
//! therefore emits, for every compound, the whole compound, each of its segments, and each
//! segment's words (split at underscores and case changes): `HashMap::entry` gives
//! `hashmap::entry`, `hashmap`, `hash`, `map` and `entry`. Queries go through the same analyzer,
//! so a query for the whole name matches all of these terms and ranks the passage that has the
//! name above one that merely shares a part.

use tantivy::tokenizer::{
    AsciiFoldingFilter, Language, LowerCaser, RemoveLongFilter, Stemmer, StopWordFilter,
    TextAnalyzer, Token, TokenStream, Tokenizer,
};

/// Terms longer than this many bytes are dropped: base64 blobs and hashes match nothing a
/// person types, and tantivy refuses terms beyond 64 KiB.
const MAX_TERM_BYTES: usize = 64;

/// Builds the analyzer for a language code (see [`language`]); `None` for an unknown code.
pub(crate) fn analyzer(code: &str) -> Option<TextAnalyzer> {
    let base = TextAnalyzer::builder(IdentifierTokenizer::default())
        .filter(RemoveLongFilter::limit(MAX_TERM_BYTES))
        .filter(LowerCaser);
    if code == "none" {
        return Some(base.build());
    }
    let lang = language(code)?;
    let folded = base.filter(AsciiFoldingFilter);
    Some(match StopWordFilter::new(lang) {
        Some(stop) => folded.filter(stop).filter(Stemmer::new(lang)).build(),
        None => folded.filter(Stemmer::new(lang)).build(),
    })
}

/// The stemming language of an ISO 639-1 code.
pub(crate) fn language(code: &str) -> Option<Language> {
    Some(match code {
        "ar" => Language::Arabic,
        "da" => Language::Danish,
        "nl" => Language::Dutch,
        "en" => Language::English,
        "fi" => Language::Finnish,
        "fr" => Language::French,
        "de" => Language::German,
        "el" => Language::Greek,
        "hu" => Language::Hungarian,
        "it" => Language::Italian,
        "no" => Language::Norwegian,
        "pt" => Language::Portuguese,
        "ro" => Language::Romanian,
        "ru" => Language::Russian,
        "es" => Language::Spanish,
        "sv" => Language::Swedish,
        "ta" => Language::Tamil,
        "tr" => Language::Turkish,
        _ => return None,
    })
}

/// The language codes [`analyzer`] accepts, for error messages.
pub const LANGUAGES: &str =
    "ar, da, de, el, en, es, fi, fr, hu, it, nl, no, pt, ro, ru, sv, ta, tr, or none";

/// Splits text into words and identifiers, emitting each compound whole and in its parts (see
/// the module docs). Every term of one compound shares its position.
#[derive(Clone, Default)]
pub(crate) struct IdentifierTokenizer {
    terms: Vec<Token>,
}

/// The terms of one text, produced ahead and handed out one at a time.
pub(crate) struct IdentifierStream<'a> {
    terms: &'a mut [Token],
    next: usize,
}

impl Tokenizer for IdentifierTokenizer {
    type TokenStream<'a> = IdentifierStream<'a>;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> IdentifierStream<'a> {
        self.terms.clear();
        for (position, (start, end)) in compounds(text).into_iter().enumerate() {
            emit_compound(text, start, end, position, &mut self.terms);
        }
        IdentifierStream {
            terms: &mut self.terms,
            next: 0,
        }
    }
}

impl TokenStream for IdentifierStream<'_> {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.terms.len()
    }

    fn token(&self) -> &Token {
        &self.terms[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.terms[self.next - 1]
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Byte length of a joiner between two segments of a compound at the start of `rest`:
/// `::`, `.`, `-`, or none.
fn joiner(rest: &str) -> usize {
    if rest.starts_with("::") {
        2
    } else if rest.starts_with('.') || rest.starts_with('-') {
        1
    } else {
        0
    }
}

/// The byte ranges of the compounds of `text`: runs of word characters joined by `::`, `.` or
/// `-` where a word character follows the joiner (so a sentence's final full stop is no
/// joiner).
fn compounds(text: &str) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < text.len() {
        let c = text[i..].chars().next().expect("i is on a char boundary");
        if !is_word(c) {
            i += c.len_utf8();
            continue;
        }
        let start = i;
        loop {
            while let Some(c) = text[i..].chars().next().filter(|&c| is_word(c)) {
                i += c.len_utf8();
            }
            let j = joiner(&text[i..]);
            if j > 0 && text[i + j..].chars().next().is_some_and(is_word) {
                i += j;
            } else {
                break;
            }
        }
        out.push((start, i));
    }
    out
}

/// Pushes the terms of the compound `text[start..end]`: the whole, its segments, and their
/// words, each once.
fn emit_compound(text: &str, start: usize, end: usize, position: usize, out: &mut Vec<Token>) {
    let first = out.len();
    let push = |from: usize, to: usize, out: &mut Vec<Token>| {
        let term = text[from..to].trim_matches('_');
        if term.is_empty() || out[first..].iter().any(|t| t.text == term) {
            return;
        }
        out.push(Token {
            offset_from: from,
            offset_to: to,
            position,
            text: term.to_string(),
            position_length: 1,
        });
    };
    push(start, end, out);
    let mut seg_start = start;
    let mut i = start;
    while i <= end {
        let j = if i < end { joiner(&text[i..end]) } else { 0 };
        if i == end || j > 0 {
            push(seg_start, i, out);
            for (a, b) in words(&text[seg_start..i]) {
                push(seg_start + a, seg_start + b, out);
            }
            if i == end {
                break;
            }
            i += j;
            seg_start = i;
        } else {
            i += text[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
}

/// The words of one segment: split at underscores, at a lower-case letter followed by an
/// upper-case one (`hashMap`), and before the last capital of a run followed by a lower-case
/// letter (`HTTPServer` → `HTTP`, `Server`). Digits stay with the word before them.
fn words(segment: &str) -> Vec<(usize, usize)> {
    let chars: Vec<(usize, char)> = segment.char_indices().collect();
    let mut out = Vec::new();
    let mut start: Option<usize> = None;
    for (n, &(i, c)) in chars.iter().enumerate() {
        if c == '_' {
            if let Some(s) = start.take() {
                out.push((s, i));
            }
            continue;
        }
        let Some(s) = start else {
            start = Some(i);
            continue;
        };
        let prev = chars[n - 1].1;
        let next = chars.get(n + 1).map(|&(_, c)| c);
        let boundary = c.is_uppercase()
            && (prev.is_lowercase()
                || prev.is_ascii_digit()
                || (prev.is_uppercase() && next.is_some_and(char::is_lowercase)));
        if boundary {
            out.push((s, i));
            start = Some(i);
        }
    }
    if let Some(s) = start {
        out.push((s, segment.len()));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms(code: &str, text: &str) -> Vec<String> {
        let mut a = analyzer(code).expect("known language");
        let mut stream = a.token_stream(text);
        let mut out = Vec::new();
        while stream.advance() {
            out.push(stream.token().text.clone());
        }
        out
    }

    #[test]
    fn identifiers_give_their_whole_and_their_parts() {
        assert_eq!(
            terms("none", "HashMap::entry"),
            ["hashmap::entry", "hashmap", "hash", "map", "entry"]
        );
        assert_eq!(
            terms("none", "snake_case_names"),
            ["snake_case_names", "snake", "case", "names"]
        );
        assert_eq!(
            terms("none", "os.path.join()"),
            ["os.path.join", "os", "path", "join"]
        );
        assert_eq!(
            terms("none", "--request-timeout"),
            ["request-timeout", "request", "timeout"]
        );
        assert_eq!(
            terms("none", "HTTPServer"),
            ["httpserver", "http", "server"]
        );
        assert_eq!(terms("none", "sha256sum"), ["sha256sum"]);
        assert_eq!(terms("none", "__init__"), ["init"]);
    }

    #[test]
    fn prose_splits_into_words_and_a_final_full_stop_joins_nothing() {
        assert_eq!(
            terms("none", "The end. Next, a well-known fact…"),
            [
                "the",
                "end",
                "next",
                "a",
                "well-known",
                "well",
                "known",
                "fact"
            ]
        );
    }

    #[test]
    fn english_drops_stop_words_and_stems() {
        assert_eq!(
            terms("en", "The connections are running"),
            ["connect", "run"]
        );
        // Stemming applies to every term of an identifier alike, in passages and queries.
        assert_eq!(terms("en", "read_lines"), ["read_lin", "read", "line"]);
        assert_eq!(terms("en", "Café"), ["cafe"]);
    }

    #[test]
    fn languages() {
        assert!(analyzer("de").is_some());
        assert!(analyzer("xx").is_none());
        assert_eq!(terms("fr", "les chevaux"), ["cheval"]);
    }

    #[test]
    fn non_ascii_text_is_split_on_characters_not_bytes() {
        assert_eq!(terms("none", "naïve Größe"), ["naïve", "größe"]);
        assert_eq!(terms("none", "東京 タワー"), ["東京", "タワー"]);
        assert!(terms("none", "… — !").is_empty());
    }
}
