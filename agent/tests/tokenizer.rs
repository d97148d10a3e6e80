//! The tokenizer built from the default model's GGUF metadata, on the real file fetched by
//! hack/fetch-models.

use inferpool_agent::engine::gguf::GgufHeader;
use inferpool_agent::engine::tokenizer::ModelTokenizer;
use inferpool_e2e::parts::default_model;

fn tokenizer() -> anyhow::Result<ModelTokenizer> {
    Ok(ModelTokenizer::from_gguf(&GgufHeader::read(
        &default_model()?,
    )?)?)
}

#[test]
fn ids_match_the_reference_tokenizer() -> anyhow::Result<()> {
    let t = tokenizer()?;
    // llama.cpp gives 504 for "The" on this file; a GPT-2 style prefix space would give 378.
    assert_eq!(t.encode("The")?, [504]);
    assert_eq!(t.vocab_size(), 49152);
    Ok(())
}

#[test]
fn text_round_trips_and_digits_split() -> anyhow::Result<()> {
    let t = tokenizer()?;
    for text in [
        "Hello, world!",
        "  two leading spaces",
        "naïve café ☕",
        "line\nbreak\ttab",
    ] {
        let ids = t.encode(text)?;
        assert_eq!(t.decode(&ids, false)?, text);
    }
    assert_eq!(t.encode("2024")?.len(), 4, "digits are split one by one");
    Ok(())
}

#[test]
fn chat_markers_are_single_special_tokens() -> anyhow::Result<()> {
    let t = tokenizer()?;
    let start = t.token_id("<|im_start|>").expect("ChatML start token");
    let end = t.token_id("<|im_end|>").expect("ChatML end token");
    let ids = t.encode("<|im_start|>user\nHi<|im_end|>")?;
    assert_eq!(ids.first(), Some(&start));
    assert_eq!(ids.last(), Some(&end));
    assert_eq!(t.decode(&ids, true)?, "user\nHi");
    assert!(
        t.chat_template
            .as_deref()
            .is_some_and(|c| c.contains("im_start"))
    );
    assert_eq!(t.eos, end, "SmolLM2-Instruct ends turns with <|im_end|>");
    Ok(())
}

#[test]
fn the_models_own_chat_template_renders_chatml() -> anyhow::Result<()> {
    use inferpool_agent::engine::chat::{ChatMessage, ChatTemplate};
    let t = tokenizer()?;
    let source = t.chat_template.clone().unwrap_or_default();
    let template = ChatTemplate::new(&source, "<|im_start|>", "<|im_end|>")?;
    let prompt = template.render(&[ChatMessage::new("user", "Hi")], true)?;
    assert_eq!(
        prompt,
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
         <|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    );
    let own_system = [
        ChatMessage::new("system", "Be brief."),
        ChatMessage::new("user", "Hi"),
    ];
    let prompt = template.render(&own_system, false)?;
    assert!(
        prompt.starts_with("<|im_start|>system\nBe brief.<|im_end|>\n")
            && !prompt.ends_with("assistant\n")
    );
    Ok(())
}
