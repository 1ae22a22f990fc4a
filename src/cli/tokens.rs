//! `sdlab tokens`: what the tokenizer makes of a prompt.

use anyhow::Result;
use clap::Args;
use sdlab::model::tokenizer::{ClipTokenizer, TokenKind, TokenizedPrompt};
use sdlab::model::{ModelSource, Progress};
use sdlab::text::printable_line;

#[derive(Args)]
pub struct TokensArgs {
    /// shapes (built in), a diffusers folder, a hub repo id (owner/name[@revision]), or a preset.
    #[arg(long, default_value = sdlab::model::builtin::DEFAULT)]
    model: String,
    #[arg(long)]
    prompt: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: TokensArgs) -> Result<()> {
    let tokenizer_dir = ModelSource::parse(&args.model)?.resolve_tokenizer(&Progress::Bars)?;
    let tokenizer = ClipTokenizer::from_folder(&tokenizer_dir)?;
    let tokens = tokenizer.encode(&args.prompt)?;
    if args.json {
        println!("{}", serde_json::to_string(&tokens)?);
    } else {
        print_table(&tokens);
    }
    Ok(())
}

/// Words one per line, the padding run folded into one line as the talk shows it.
fn print_table(tokens: &TokenizedPrompt) {
    println!("{:>3}  {:>6}  token", "#", "id");
    let mut rows = tokens.tokens.iter().enumerate().peekable();
    while let Some((pos, token)) = rows.next() {
        let mark = match token.kind {
            TokenKind::Bos => "BOS",
            TokenKind::Eos => "EOS",
            TokenKind::Pad => "PAD",
            TokenKind::Word => "",
        };
        if token.kind == TokenKind::Pad {
            let count = 1 + std::iter::from_fn(|| rows.next_if(|(_, t)| t.kind == TokenKind::Pad)).count();
            let last = pos + count - 1;
            let text = printable_line(&token.text);
            println!("{:>3}  {:>6}  {text:<20} PAD x {count} ({pos}..{last})", pos, token.id);
        } else {
            // A vocabulary file can hold any text: shown, never obeyed by the terminal.
            println!("{pos:>3}  {:>6}  {:<20} {mark}", token.id, printable_line(&token.text));
        }
    }
    if !tokens.truncated.is_empty() {
        println!(
            "truncated: {} tokens past the limit were dropped: {}",
            tokens.truncated.len(),
            printable_line(&tokens.truncated.join(" "))
        );
    }
}
