//! Sentence embeddings from the real all-MiniLM-L6-v2 model.

use candle_core::Device;
use inferpool_agent::engine::embed::Embedder;
use inferpool_agent::engine::rows::Padding;
use inferpool_agent::scheduler::embed_batcher::EmbedHandle;
use inferpool_e2e::parts::embedding_model;

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn similar_sentences_are_close_and_vectors_are_unit_length() -> anyhow::Result<()> {
    let embedder = Embedder::load(&embedding_model()?, &Device::Cpu)?;
    let texts = [
        "A man is playing a guitar.",
        "Someone plays the guitar.",
        "The stock market fell sharply today.",
    ]
    .map(String::from);
    let out = embedder.embed(&texts)?;
    assert_eq!(out.vectors.len(), 3);
    assert!(out.vectors.iter().all(|v| v.len() == 384));
    for v in &out.vectors {
        assert!((cosine(v, v) - 1.0).abs() < 1e-4);
    }
    let (close, far) = (
        cosine(&out.vectors[0], &out.vectors[1]),
        cosine(&out.vectors[0], &out.vectors[2]),
    );
    assert!(close > 0.6 && far < 0.3, "close {close}, far {far}");
    assert!(out.tokens() > 15, "{} tokens", out.tokens());
    // Padding inside a batch does not change a text's vector.
    let alone = embedder.embed(&texts[..1])?;
    assert!(cosine(&alone.vectors[0], &out.vectors[0]) > 0.9999);
    Ok(())
}

#[tokio::test]
async fn concurrent_embedding_requests_share_forward_passes() -> anyhow::Result<()> {
    let dir = embedding_model()?;
    let alone = Embedder::load(&dir, &Device::Cpu)?;
    let handle = EmbedHandle::start(Embedder::load(&dir, &Device::Cpu)?, Padding::Longest);
    let texts: Vec<String> = (0..16)
        .map(|i| format!("Request number {i} asks about {} ships.", i * 7))
        .collect();
    let requests = texts.iter().map(|t| handle.embed(vec![t.clone()]));
    let answers = futures::future::join_all(requests).await;
    assert!(
        handle.forwards() < 16,
        "16 concurrent requests took {} forward passes",
        handle.forwards()
    );
    for (text, answer) in texts.iter().zip(answers) {
        let answer = answer?;
        let solo = alone.embed(std::slice::from_ref(text))?;
        // Padded to the batch's longest input and masked: the same vector as alone.
        assert!(
            cosine(&answer.vectors[0], &solo.vectors[0]) > 0.9999,
            "{text}"
        );
        assert_eq!(answer.tokens(), solo.tokens(), "{text}");
    }
    Ok(())
}

#[test]
fn every_padding_gives_each_text_its_own_vector() -> anyhow::Result<()> {
    let embedder = Embedder::load(&embedding_model()?, &Device::Cpu)?;
    let texts = [
        "A man is playing a guitar.",
        "Hi",
        "The stock market fell sharply today, after a long week of losses.",
    ]
    .map(String::from);
    let alone: Vec<Vec<f32>> = texts
        .iter()
        .map(|t| {
            embedder
                .embed(std::slice::from_ref(t))
                .map(|e| e.vectors[0].clone())
        })
        .collect::<Result<_, _>>()?;
    for padding in [Padding::None, Padding::Longest, Padding::Bucket] {
        let out = embedder.embed_padded(&texts, padding)?;
        let solo_tokens: usize = texts
            .iter()
            .map(|t| embedder.embed(std::slice::from_ref(t)).map(|e| e.tokens()))
            .sum::<Result<usize, _>>()?;
        assert_eq!(
            out.tokens(),
            solo_tokens,
            "{padding:?}: pads are not tokens"
        );
        for (v, solo) in out.vectors.iter().zip(&alone) {
            assert!(cosine(v, solo) > 0.9999, "{padding:?}");
        }
    }
    Ok(())
}
