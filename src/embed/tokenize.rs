//! Tokenization: `tokenizer.json` loaded with the sentence-transformers settings.
//!
//! A model's `tokenizer.json` may carry its own truncation and padding (all-MiniLM-L6-v2's
//! truncates at 128 and pads every input to 128). sentence-transformers overrides both with its
//! `max_seq_length` and dynamic padding, and so do we: the tokenizer truncates at the encoder's
//! limit and never pads, since the forward pass runs sequences unpadded.

use std::path::Path;

use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use super::config::read_file;
use super::{EmbedError, EmbedResult};

/// A tokenized text, ready for [`SentenceEncoder::embed_encoded`](super::SentenceEncoder):
/// the token ids with the special tokens, truncated to the encoder's `max_seq_length`, unpadded.
///
/// A tokenized pair (a query and a passage for a [`CrossEncoder`](super::CrossEncoder)) also
/// carries its token type ids (0 for the first segment, 1 for the second in BERT's template).
/// A single text has none: all its tokens are of type 0, which the forward pass handles without
/// reading a type per token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Encoded {
    ids: Vec<u32>,
    /// `None` for a single segment (all type 0); else one type per id.
    type_ids: Option<Vec<u32>>,
}

impl Encoded {
    /// Wraps token ids as they come out of the model's tokenizer, special tokens included, all
    /// of token type 0. [`SentenceEncoder::embed_encoded`](super::SentenceEncoder::embed_encoded)
    /// checks them against the model.
    pub fn from_ids(ids: Vec<u32>) -> Self {
        Encoded {
            ids,
            type_ids: None,
        }
    }

    /// Wraps the token ids and token type ids of a tokenized pair, as they come out of the
    /// model's tokenizer. The model checks them (same length, types within its type
    /// vocabulary) before running them.
    pub fn with_type_ids(ids: Vec<u32>, type_ids: Vec<u32>) -> Self {
        // All zeros is the single-segment case: keep the forward pass's plain path for it.
        let type_ids = type_ids.iter().any(|&t| t != 0).then_some(type_ids);
        Encoded { ids, type_ids }
    }

    /// The token ids.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// The token type ids, one per id; `None` when every token is of type 0.
    pub fn type_ids(&self) -> Option<&[u32]> {
        self.type_ids.as_deref()
    }

    /// Number of tokens: what this text costs in a batch's token budget.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no tokens at all (never the case for a tokenized text, which always
    /// carries its special tokens).
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The model's tokenizer twice: as shipped minus padding and truncation (to count tokens), and
/// truncating at the encoder's limit (to encode).
#[derive(Clone)]
pub(crate) struct TextTokenizer {
    plain: Tokenizer,
    truncating: Tokenizer,
    lowercase: bool,
}

impl TextTokenizer {
    /// Loads `tokenizer.json` from `dir`; inputs are truncated to `max_seq_length` tokens,
    /// special tokens included, as sentence-transformers does.
    pub(crate) fn load(dir: &Path, max_seq_length: usize, lowercase: bool) -> EmbedResult<Self> {
        let path = dir.join("tokenizer.json");
        let bytes = read_file(&path)?;
        let mut plain = Tokenizer::from_bytes(&bytes)
            .map_err(|e| EmbedError::Tokenizer(format!("cannot load {}: {e}", path.display())))?;
        plain.with_padding(None);
        plain
            .with_truncation(None)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let mut truncating = plain.clone();
        truncating
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let tokenizer = TextTokenizer {
            plain,
            truncating,
            lowercase,
        };
        // A tokenizer whose post-processor adds more special tokens than fit would leave no
        // room for text; find out now rather than on the first request.
        let probe = tokenizer.encode("")?;
        if probe.len() > max_seq_length {
            return Err(EmbedError::Tokenizer(format!(
                "{} adds {} special tokens, more than max_seq_length {max_seq_length}",
                path.display(),
                probe.len()
            )));
        }
        Ok(tokenizer)
    }

    /// The tokenizer as shipped, without padding and truncation.
    pub(crate) fn plain(&self) -> &Tokenizer {
        &self.plain
    }

    /// Tokens in `text`, special tokens included, before truncation.
    pub(crate) fn count(&self, text: &str) -> EmbedResult<usize> {
        let text = self.prepare(text);
        let encoding = self
            .plain
            .encode(text.as_ref(), true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(encoding.len())
    }

    /// Tokenizes `text`, truncating it to `max_seq_length` tokens.
    pub(crate) fn encode(&self, text: &str) -> EmbedResult<Encoded> {
        let text = self.prepare(text);
        let encoding = self
            .truncating
            .encode(text.as_ref(), true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(Encoded::from_ids(encoding.get_ids().to_vec()))
    }

    /// Tokens the pair template adds around a pair (3 for BERT's `[CLS] a [SEP] b [SEP]`): a
    /// pair limit must leave room beyond them, or the truncating tokenizer cannot work.
    pub(crate) fn pair_special_tokens(&self) -> EmbedResult<usize> {
        let encoding = self
            .plain
            .encode(("", ""), true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        Ok(encoding.len())
    }

    /// Tokenizes the pair (`first`, `second`) with the tokenizer's pair template (`[CLS] first
    /// [SEP] second [SEP]` for BERT, types 0 then 1), truncating the longer of the two, token
    /// by token, until the pair fits `max_seq_length` (`longest_first`, as sentence-transformers'
    /// `CrossEncoder` asks of the same tokenizer). The template's token types are kept only
    /// with `token_types`; without, every token is of type 0.
    pub(crate) fn encode_pair(
        &self,
        first: &str,
        second: &str,
        token_types: bool,
    ) -> EmbedResult<Encoded> {
        let (first, second) = (self.prepare(first), self.prepare(second));
        let encoding = self
            .truncating
            .encode((first.as_ref(), second.as_ref()), true)
            .map_err(|e| EmbedError::Tokenizer(e.to_string()))?;
        let ids = encoding.get_ids().to_vec();
        Ok(if token_types {
            Encoded::with_type_ids(ids, encoding.get_type_ids().to_vec())
        } else {
            Encoded::from_ids(ids)
        })
    }

    fn prepare<'a>(&self, text: &'a str) -> std::borrow::Cow<'a, str> {
        if self.lowercase {
            text.to_lowercase().into()
        } else {
            text.into()
        }
    }
}
