//! `VaderSentiment` on call-centre sentences.

use pbx_ai::VaderSentiment;
use pbx_core::ai::{SentimentAnalyzer, SentimentLabel};

use crate::{KEY, call_id};

async fn check(text: &str, label: SentimentLabel) -> f64 {
    let s = VaderSentiment::new().analyze(&call_id(), KEY, text).await.unwrap();
    assert_eq!(s.label, label, "{text:?} scored {}", s.score);
    assert!((-1.0..=1.0).contains(&s.score));
    s.score
}

#[tokio::test]
async fn angry_callers_are_negative() {
    let score =
        check("This is terrible. I am furious, your service is awful and I hate waiting.", SentimentLabel::Negative)
            .await;
    assert!(score < -0.5, "{score}");
    check("Your useless support wasted my whole day and I want a refund now!", SentimentLabel::Negative).await;
}

#[tokio::test]
async fn pleased_callers_are_positive() {
    let score =
        check("Thank you so much, that was wonderful, I really appreciate your great help.", SentimentLabel::Positive)
            .await;
    assert!(score > 0.5, "{score}");
}

#[tokio::test]
async fn plain_statements_are_neutral() {
    let score =
        check("I am calling about the invoice from March and the order status of my router.", SentimentLabel::Neutral)
            .await;
    assert!(score.abs() < 0.05, "{score}");
    let empty = check("", SentimentLabel::Neutral).await;
    assert_eq!(empty, 0.0);
}
