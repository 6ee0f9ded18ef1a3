//! The reference outputs of sentence-transformers' `CrossEncoder` for the fixture
//! cross-encoders, as the parity tests of the reranker and of `/rerank` read them.

use std::path::Path;

use serde_json::Value;

/// The reference outputs of sentence-transformers for a model directory.
pub(crate) struct Reference {
    pub(crate) pairs: Vec<(String, String)>,
    pub(crate) scores: Vec<f32>,
    pub(crate) logits: Vec<f32>,
    pub(crate) token_ids: Vec<Vec<u32>>,
    pub(crate) token_type_ids: Vec<Vec<u32>>,
    pub(crate) max_length: usize,
}

impl Reference {
    /// Reads `reference.json` in `dir` (written by `scripts/make_tiny_cross_encoder.py`).
    pub(crate) fn read(dir: &Path) -> Self {
        let json =
            serde_json::from_slice::<Value>(&std::fs::read(dir.join("reference.json")).unwrap())
                .unwrap();
        let floats = |key: &str| -> Vec<f32> {
            json[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect()
        };
        let ints = |key: &str| -> Vec<Vec<u32>> {
            json[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| {
                    row.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() as u32)
                        .collect()
                })
                .collect()
        };
        let pairs = json["pairs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                (
                    p[0].as_str().unwrap().to_owned(),
                    p[1].as_str().unwrap().to_owned(),
                )
            })
            .collect();
        Reference {
            pairs,
            scores: floats("scores"),
            logits: floats("logits"),
            token_ids: ints("token_ids"),
            token_type_ids: ints("token_type_ids"),
            max_length: json["max_length"].as_u64().unwrap() as usize,
        }
    }

    /// The pairs as string slices.
    pub(crate) fn pair_refs(&self) -> Vec<(&str, &str)> {
        self.pairs
            .iter()
            .map(|(q, t)| (q.as_str(), t.as_str()))
            .collect()
    }
}
