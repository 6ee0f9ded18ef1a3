//! Splitting documents into passages that fit the encoder's input.
//!
//! Passages are measured in the model's own tokens, so that no passage is ever truncated by the
//! encoder, and cut at the largest semantic boundary that fits (paragraphs, then sentences, then
//! words), with an overlap between neighbours so that a sentence cut in two is still found whole
//! in one of them. The splitting itself is the `text-splitter` crate's; this module supplies the
//! token count and turns its output into passages with character offsets.

use std::sync::Arc;

use text_splitter::{ChunkConfig, TextSplitter, TryChunkSizer};
use tokenizers::Tokenizer;

/// Tokens the encoder adds around every input ([CLS] and [SEP] for BERT), which the passage
/// budget must leave room for.
const SPECIAL_TOKENS: usize = 2;

/// A passage of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Passage {
    /// Position of the passage in its document, from 0.
    pub index: usize,
    /// Offset of the first character, in Unicode scalar values (what Python's `str` indexes).
    pub start: usize,
    /// Offset one past the last character, in Unicode scalar values.
    pub end: usize,
    /// The passage's text: `document.chars().skip(start).take(end - start)`.
    pub text: String,
}

/// Why a document could not be split.
#[derive(Debug, thiserror::Error)]
pub enum ChunkError {
    /// The settings are unusable (overlap not smaller than the passage size, size 0).
    #[error("invalid chunking settings: {0}")]
    Settings(String),
    /// The tokenizer failed on the text.
    #[error("tokenizer failed: {0}")]
    Tokenizer(String),
}

/// Counts tokens the way the encoder will see them: no truncation, no padding, no special
/// tokens (those are budgeted separately).
#[derive(Debug)]
struct TokenCount(Tokenizer);

impl TryChunkSizer for TokenCount {
    type Error = tokenizers::Error;

    fn try_size(&self, chunk: &str) -> Result<usize, Self::Error> {
        Ok(self.0.encode_fast(chunk, false)?.len())
    }
}

/// Splits texts into passages of at most `max_tokens` model tokens.
#[derive(Debug, Clone)]
pub struct Chunker {
    splitter: Arc<TextSplitter<TokenCount>>,
    max_tokens: usize,
    overlap: usize,
}

impl Chunker {
    /// A chunker for `tokenizer` whose passages hold at most `max_tokens` tokens (clamped to
    /// what the model accepts, `max_input_tokens` less its special tokens), neighbours sharing
    /// up to `overlap` tokens.
    pub fn new(
        tokenizer: &Tokenizer,
        max_input_tokens: usize,
        max_tokens: usize,
        overlap: usize,
    ) -> Result<Self, ChunkError> {
        let max_tokens = max_tokens.min(max_input_tokens.saturating_sub(SPECIAL_TOKENS));
        if max_tokens == 0 {
            return Err(ChunkError::Settings(
                "passages must hold at least one token".into(),
            ));
        }
        if overlap >= max_tokens {
            return Err(ChunkError::Settings(format!(
                "overlap ({overlap}) must be smaller than the passage size ({max_tokens} tokens)"
            )));
        }
        let mut tokenizer = tokenizer.clone();
        tokenizer
            .with_truncation(None)
            .map_err(|e| ChunkError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let config = ChunkConfig::new(max_tokens)
            .with_sizer(TokenCount(tokenizer))
            .with_overlap(overlap)
            .map_err(|e| ChunkError::Settings(e.to_string()))?;
        Ok(Chunker {
            splitter: Arc::new(TextSplitter::new(config)),
            max_tokens,
            overlap,
        })
    }

    /// The largest passage, in tokens, after clamping.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    /// The overlap between neighbouring passages, in tokens.
    pub fn overlap(&self) -> usize {
        self.overlap
    }

    /// Splits `text` into passages, in order. Text with nothing but white space gives none.
    /// CPU-bound: call it off the async runtime for long documents.
    pub fn split(&self, text: &str) -> Result<Vec<Passage>, ChunkError> {
        let mut passages = Vec::new();
        for chunk in self.splitter.try_chunk_char_indices(text) {
            let chunk = chunk.map_err(|e| ChunkError::Tokenizer(e.to_string()))?;
            let len = chunk.chunk.chars().count();
            passages.push(Passage {
                index: passages.len(),
                start: chunk.char_offset,
                end: chunk.char_offset + len,
                text: chunk.chunk.to_string(),
            });
        }
        Ok(passages)
    }
}

#[cfg(test)]
mod tests {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;

    use super::*;

    /// A word-level tokenizer over a small vocabulary: every word of the test texts is one token,
    /// and anything else becomes [UNK], so token counts are easy to reason about.
    fn tokenizer() -> Tokenizer {
        let words =
            "[UNK] [CLS] [SEP] the cat sat on mat . a dog ran far , and it was happy é ü 😀";
        let dir = tempfile::tempdir().unwrap();
        let vocab = dir.path().join("vocab.txt");
        std::fs::write(&vocab, words.replace(' ', "\n")).unwrap();
        let model = WordPiece::from_file(vocab.to_str().unwrap())
            .unk_token("[UNK]".into())
            .build()
            .unwrap();
        let mut t = Tokenizer::new(model);
        t.with_pre_tokenizer(Some(BertPreTokenizer));
        t
    }

    fn count(t: &Tokenizer, s: &str) -> usize {
        t.encode(s, false).unwrap().len()
    }

    #[test]
    fn short_text_is_one_passage() {
        let c = Chunker::new(&tokenizer(), 256, 256, 32).unwrap();
        let p = c.split("the cat sat on the mat.").unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].index, p[0].start, p[0].end), (0, 0, 23));
    }

    #[test]
    fn long_text_fits_budget_with_offsets_and_overlap() {
        let t = tokenizer();
        let sentence = "the cat sat on the mat. a dog ran far, and it was happy. ";
        let text: String = sentence.repeat(40) + "é ü 😀 the end";
        let c = Chunker::new(&t, 20, 256, 4).unwrap();
        assert_eq!(c.max_tokens(), 18, "budget leaves room for [CLS]/[SEP]");
        let passages = c.split(&text).unwrap();
        assert!(passages.len() > 10);
        let chars: Vec<char> = text.chars().collect();
        for (i, p) in passages.iter().enumerate() {
            assert_eq!(p.index, i);
            let by_offset: String = chars[p.start..p.end].iter().collect();
            assert_eq!(by_offset, p.text, "offsets are character offsets");
            assert!(count(&t, &p.text) <= 18, "passage {i} over budget");
        }
        // Neighbours overlap or touch: together they cover the text, so nothing is dropped.
        for w in passages.windows(2) {
            assert!(w[1].start <= w[0].end + 1, "gap between passages");
        }
        assert_eq!(passages.last().unwrap().end, chars.len());
        assert!(passages.iter().any(|p| p.text.contains('😀')));
    }

    #[test]
    fn prefers_sentence_boundaries() {
        let t = tokenizer();
        // Capitalised: Unicode sentence rules do not break before a lower-case word.
        let text = "The cat sat on the mat. A dog ran far. It was happy.";
        let c = Chunker::new(&t, 10, 8, 0).unwrap();
        let passages = c.split(text).unwrap();
        for p in &passages {
            assert!(p.text.ends_with('.'), "cut inside a sentence: {:?}", p.text);
        }
    }

    #[test]
    fn blank_text_has_no_passages_and_bad_settings_fail() {
        let t = tokenizer();
        let c = Chunker::new(&t, 256, 64, 8).unwrap();
        assert!(c.split("").unwrap().is_empty());
        assert!(c.split(" \n\t ").unwrap().is_empty());
        assert!(matches!(
            Chunker::new(&t, 256, 8, 8),
            Err(ChunkError::Settings(_))
        ));
        assert!(matches!(
            Chunker::new(&t, 2, 8, 0),
            Err(ChunkError::Settings(_))
        ));
    }
}
