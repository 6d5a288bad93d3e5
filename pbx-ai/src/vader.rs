//! [`VaderSentiment`]: local, rule-based sentiment (VADER), no network.

use async_trait::async_trait;
use pbx_core::CallId;
use pbx_core::ai::{AiError, Sentiment, SentimentAnalyzer, SentimentLabel};

/// VADER's conventional threshold: a compound score at or above it is positive, at
/// or below its negation negative.
pub const VADER_THRESHOLD: f64 = 0.05;

const NAME: &str = "vader";

/// Sentiment with VADER (Hutto & Gilbert, 2014), through the `vader_sentiment` crate,
/// a port of the reference Python implementation with its lexicon built in.
///
/// The score is VADER's compound score of the whole text, in `[-1, 1]`; the label is
/// `POSITIVE` at or above [`VADER_THRESHOLD`], `NEGATIVE` at or below its negation,
/// `NEUTRAL` between. Empty text is `NEUTRAL` 0. Runs on the calling task (it takes
/// microseconds per sentence) and never fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct VaderSentiment;

impl VaderSentiment {
    /// The analyser.
    pub fn new() -> Self {
        Self
    }

    /// The sentiment of `text`, synchronously.
    pub fn score(&self, text: &str) -> Sentiment {
        let compound = if text.trim().is_empty() {
            0.0
        } else {
            let analyzer = vader_sentiment::SentimentIntensityAnalyzer::new();
            analyzer.polarity_scores(text).get("compound").copied().unwrap_or(0.0)
        };
        let compound = if compound.is_finite() { compound.clamp(-1.0, 1.0) } else { 0.0 };
        let label = if compound >= VADER_THRESHOLD {
            SentimentLabel::Positive
        } else if compound <= -VADER_THRESHOLD {
            SentimentLabel::Negative
        } else {
            SentimentLabel::Neutral
        };
        Sentiment { label, score: compound }
    }
}

#[async_trait]
impl SentimentAnalyzer for VaderSentiment {
    fn name(&self) -> &str {
        NAME
    }

    async fn analyze(&self, _call_id: &CallId, _idempotency_key: &str, text: &str) -> Result<Sentiment, AiError> {
        Ok(self.score(text))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn empty_is_neutral_zero() {
        let s = VaderSentiment.score("  ");
        assert_eq!((s.label, s.score), (SentimentLabel::Neutral, 0.0));
    }

    proptest! {
        #[test]
        fn any_text_gives_a_valid_score(text in any::<String>()) {
            let s = VaderSentiment.score(&text);
            prop_assert!((-1.0..=1.0).contains(&s.score));
        }

        #[test]
        fn wordy_text_gives_a_valid_score(words in prop::collection::vec(
            prop::sample::select(vec!["not", "very", "good", "bad", "but", "kind", "of", "at", "least",
                "never", "so", "this", "without", "doubt", "!", "?", "GREAT", "the", "shit", ":)", "😀"]), 0..20)) {
            let s = VaderSentiment.score(&words.join(" "));
            prop_assert!((-1.0..=1.0).contains(&s.score));
        }
    }
}
