//! `sdlab tokens`: what the tokenizer makes of a prompt.

use anyhow::Result;
use clap::Args;
use sdlab::model::tokenizer::{ClipTokenizer, TokenKind, TokenizedPrompt};
use sdlab::model::{ModelSource, Progress};

#[derive(Args)]
pub struct TokensArgs {
    /// A diffusers folder, a hub repo id (owner/name[@revision]), or a preset.
    #[arg(long)]
    model: String,
    #[arg(long)]
    prompt: String,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: TokensArgs) -> Result<()> {
    let tokenizer_dir = ModelSource::parse(&args.model)?.resolve_tokenizer(&Progress::Bars)?;
    let tokenizer = ClipTokenizer::from_dir(&tokenizer_dir)?;
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
            println!("{:>3}  {:>6}  {:<20} PAD x {count} ({pos}..{last})", pos, token.id, token.text);
        } else {
            println!("{pos:>3}  {:>6}  {:<20} {mark}", token.id, token.text);
        }
    }
    if !tokens.truncated.is_empty() {
        println!(
            "truncated: {} tokens past the limit were dropped: {}",
            tokens.truncated.len(),
            tokens.truncated.join(" ")
        );
    }
}
