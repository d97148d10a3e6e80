//! Chat templates: the Jinja template stored with a model (or a pool's override) renders
//! chat messages into the prompt text. Hugging Face templates call Python string methods,
//! so minijinja runs with its Python-compatibility callbacks.

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

impl ChatTemplate {
    /// Compiles `source`; `bos` and `eos` are what the template sees as `bos_token` and
    /// `eos_token`.
    pub fn new(source: &str, bos: &str, eos: &str) -> Result<Self, TemplateError> {
        let mut env = Environment::new();
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
        Ok(self.env.get_template(NAME)?.render(ctx)?)
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

    #[test]
    fn a_broken_template_is_refused_up_front() {
        assert!(ChatTemplate::new("{% for m in messages %}", "", "").is_err());
    }
}
