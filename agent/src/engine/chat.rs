//! Chat templates: the Jinja template stored with a model (or a pool's override) renders
//! chat messages into the prompt text. Hugging Face templates call Python string methods,
//! so minijinja runs with its Python-compatibility callbacks.

use std::io::Write;

use minijinja::{Environment, Error, ErrorKind, context};
use serde::Serialize;

/// One chat message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// `system`, `user` or `assistant`.
    pub role: String,
    /// The text.
    pub content: String,
}

impl ChatMessage {
    /// A message from `role`.
    pub fn new(role: &str, content: &str) -> Self {
        Self {
            role: role.to_owned(),
            content: content.to_owned(),
        }
    }
}

/// A template that cannot be compiled, or messages it refuses.
#[derive(Debug, thiserror::Error)]
#[error("chat template: {0}")]
pub struct TemplateError(String);

impl From<Error> for TemplateError {
    fn from(e: Error) -> Self {
        Self(e.to_string())
    }
}

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

const NAME: &str = "chat";

/// `model.chatTemplate` is user input, so a template runs within bounds. Instructions per
/// render: real templates take a few dozen per message; a loop without end runs out.
const FUEL: u64 = 1_000_000;
/// Nested calls (macros, includes): deeper is refused instead of exhausting the stack.
const RECURSION_LIMIT: usize = 64;
/// Longest template source; the largest Hugging Face templates (with tools) are ~20 KiB.
const MAX_SOURCE_BYTES: usize = 256 * 1024;
/// Longest rendered prompt: far more than any context window holds.
const MAX_OUTPUT_BYTES: usize = 16 * 1024 * 1024;

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are what the template sees as `bos_token` and
    /// `eos_token`.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, TemplateError> {
        if source.len() > MAX_SOURCE_BYTES {
            return Err(TemplateError(format!(
                "template of {} bytes, the most is {MAX_SOURCE_BYTES}",
                source.len()
            )));
        }
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |message: String| -> Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, message))
            },
        );
        env.add_template_owned(NAME, source.to_owned())?;
        Ok(Self {
            env,
            bos: bos.to_owned(),
            eos: eos.to_owned(),
        })
    }

    /// The prompt for `messages`, ending with the assistant's turn opener when
    /// `add_generation_prompt` is set.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, TemplateError> {
        let ctx = context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        };
        let mut out = Bounded::default();
        let template = self.env.get_template(NAME)?;
        let rendered = template.render_captured_to(ctx, &mut out).map(drop);
        // minijinja reports a failed write without its cause: name it here.
        if out.over {
            let message = format!("rendered prompt over {MAX_OUTPUT_BYTES} bytes");
            return Err(TemplateError(message));
        }
        rendered?;
        String::from_utf8(out.text).map_err(|e| TemplateError(e.to_string()))
    }
}

/// Rendered text, refused beyond `MAX_OUTPUT_BYTES` (the write error ends the render).
#[derive(Default)]
struct Bounded {
    text: Vec<u8>,
    over: bool,
}

impl Write for Bounded {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.text.len() + buf.len() > MAX_OUTPUT_BYTES {
            self.over = true;
            return Err(std::io::Error::other("rendered prompt too long"));
        }
        self.text.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fuzz target `chat_template` (fuzz/) and its corpus replay (tests/fuzz_corpus.rs):
/// any text as a template compiles or is refused, and renders or is refused within the
/// bounds above, never a panic.
#[doc(hidden)]
pub fn fuzz_template(data: &[u8]) {
    let source = String::from_utf8_lossy(data);
    let Ok(template) = ChatTemplate::new(&source, "<s>", "</s>") else {
        return;
    };
    let messages = [
        ChatMessage::new("system", "be brief"),
        ChatMessage::new("user", "hi {{ x }} {% raw %}\u{0}"),
        ChatMessage::new("assistant", ""),
        ChatMessage::new("user", "again"),
    ];
    if let Ok(text) = template.render(&messages, data.len().is_multiple_of(2)) {
        assert!(text.len() <= MAX_OUTPUT_BYTES);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_string_methods_and_raise_exception_work() {
        let t = ChatTemplate::new(
            "{% for m in messages %}{% if m.role not in ['user', 'assistant'] %}\
             {{ raise_exception('bad role ' + m.role) }}{% endif %}[{{ m.content.strip() }}]{% endfor %}{{ eos_token }}",
            "<s>",
            "</s>",
        )
        .unwrap();
        assert_eq!(
            t.render(&[ChatMessage::new("user", "  hi  ")], false)
                .unwrap(),
            "[hi]</s>"
        );
        let err = t
            .render(&[ChatMessage::new("tool", "x")], false)
            .unwrap_err();
        assert!(err.to_string().contains("bad role tool"), "{err}");
    }

    fn refusal(source: &str) -> String {
        let t = ChatTemplate::new(source, "", "").unwrap();
        t.render(&[ChatMessage::new("user", "hi")], false)
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn hostile_templates_stop_within_bounds() {
        let endless =
            "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}";
        assert!(refusal(endless).contains("fuel"), "{}", refusal(endless));
        let recursive = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        assert!(
            refusal(recursive).contains("recursion"),
            "{}",
            refusal(recursive)
        );
        let huge = "{% for i in range(1000) %}{{ 'x' * 100000 }}{% endfor %}";
        assert!(
            refusal(huge).contains("rendered prompt over"),
            "{}",
            refusal(huge)
        );
        let long = "x".repeat(MAX_SOURCE_BYTES + 1);
        assert!(ChatTemplate::new(&long, "", "").is_err());
    }

    #[test]
    fn long_conversations_fit_in_the_fuel() {
        let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content.strip() }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
        let t = ChatTemplate::new(chatml, "", "").unwrap();
        let messages = vec![ChatMessage::new("user", "hello there"); 5000];
        assert!(t.render(&messages, true).unwrap().ends_with("assistant\n"));
    }

    #[test]
    fn a_broken_template_is_refused_up_front() {
        assert!(ChatTemplate::new("{% for m in messages %}", "", "").is_err());
    }
}
