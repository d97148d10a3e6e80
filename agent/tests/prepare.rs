//! Preparing OpenAI chat requests for the engine, with the default model's tokenizer and
//! chat template.

use inferpool_agent::engine::chat::ChatTemplate;
use inferpool_agent::engine::gguf::GgufHeader;
use inferpool_agent::engine::prepare::{ModelFacts, PrepareError, prepare_chat};
use inferpool_agent::engine::tokenizer::ModelTokenizer;
use inferpool_agent::generation::Priority;
use inferpool_e2e::parts::default_model;
use inferpool_protocol::openai::{ChatCompletionRequest, ValidChatRequest};

fn valid(body: serde_json::Value) -> anyhow::Result<ValidChatRequest> {
    Ok(serde_json::from_value::<ChatCompletionRequest>(body)?.try_into()?)
}

#[test]
fn a_chat_request_becomes_a_templated_prompt_with_fitted_limits() -> anyhow::Result<()> {
    let tok = ModelTokenizer::from_gguf(&GgufHeader::read(&default_model()?)?)?;
    let template = ChatTemplate::new(tok.chat_template.as_deref().unwrap_or_default(), "", "")?;
    let facts = ModelFacts {
        tokenizer: &tok,
        template: &template,
        context: 8192,
    };
    let req = valid(
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}],
        "temperature": 0, "max_tokens": 20}),
    )?;
    let g = prepare_chat(&req, &facts, Priority::High)?;
    let text = tok.decode(&g.prompt, false)?;
    assert!(
        text.ends_with("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"),
        "{text:?}"
    );
    assert_eq!(
        (g.max_tokens, g.stop_tokens.as_slice(), g.priority),
        (20, [tok.eos].as_slice(), Priority::High)
    );
    assert_eq!(g.sampling.temperature, 0.0);

    // Without max_tokens, generation may fill what the context leaves.
    let open =
        valid(serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "Hi"}]}))?;
    let g = prepare_chat(&open, &facts, Priority::Normal)?;
    assert_eq!(g.max_tokens, 8192 - g.prompt.len());

    let tiny = ModelFacts {
        context: 10,
        ..facts
    };
    let err = prepare_chat(&req, &tiny, Priority::Normal).unwrap_err();
    assert!(matches!(
        err,
        PrepareError::PromptTooLong { context: 10, .. }
    ));
    assert_eq!(
        (err.kind().status(), err.kind().name()),
        (413, "context_length_exceeded")
    );
    Ok(())
}
