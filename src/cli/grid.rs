//! `sdlab grid`: the classic question in one picture: rows of seeds, columns of
//! guidance scales (optionally each cell's x0 at chosen steps), every cell also
//! saved as a run of one session (the first as its main run, the others as
//! branches forked at step 0) so that any cell opens in the lab.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Result};
use clap::Args;
use sdlab::contact_sheet::Sheet;
use sdlab::fsutil::{check_output, write_atomic};
use sdlab::image_out::to_rgb8;
use sdlab::png_meta::encode_png;
use sdlab::scheduler::SamplerName;
use sdlab::session::store::{self, SaveOptions};
use sdlab::session::{Change, Session, Settings};

use super::ModelArgs;

#[derive(Args)]
pub struct GridArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value = "")]
    negative_prompt: String,
    /// One row per seed: 1,2,3.
    #[arg(long, value_delimiter = ',', required = true)]
    seeds: Vec<u64>,
    /// One column per guidance scale: 3,7.5,12.
    #[arg(long, value_delimiter = ',', required = true)]
    guidance: Vec<f64>,
    /// Also show each cell's predicted x0 after these steps: 5,10,20.
    #[arg(long, value_delimiter = ',')]
    steps_shown: Vec<usize>,
    /// Denoising steps (default: the model's suggestion, as generate).
    #[arg(long)]
    steps: Option<usize>,
    #[arg(long)]
    width: Option<usize>,
    #[arg(long)]
    height: Option<usize>,
    /// The sampler (see generate --scheduler).
    #[arg(long, default_value = "ddim", value_parser = super::generate::parse_scheduler)]
    scheduler: String,
    #[arg(long, default_value_t = 0.0)]
    eta: f64,
    #[arg(long, default_value = "grid.png")]
    out: PathBuf,
    /// The session the cells are saved in: the first cell its main run, the
    /// others its branches seed<S>-cfg<G>.
    #[arg(long, default_value = "grid")]
    session: String,
    /// The folder sessions are saved in.
    #[arg(long, default_value = store::DEFAULT_ROOT)]
    dir: PathBuf,
    /// Replace a session of that name.
    #[arg(long)]
    force: bool,
}

/// Enough for any sheet a screen shows; each cell is a whole run.
const MAX_CELLS: usize = 256;

pub fn run(args: GridArgs) -> Result<()> {
    check_output(&args.out)?;
    let cells = args.seeds.len() * args.guidance.len();
    if cells > MAX_CELLS {
        bail!("--seeds x --guidance: {cells} cells, expected at most {MAX_CELLS}");
    }
    let session_dir = store::session_dir(&args.dir, &args.session)?;
    store::check_can_save(&session_dir, args.force)?;
    let suggested = args.model.suggested();
    let model = args.model.open()?;
    let size = model.default_size();
    let settings = Settings {
        prompt: args.prompt.clone(),
        negative_prompt: args.negative_prompt.clone(),
        seed: args.seeds[0],
        steps: args.steps.unwrap_or(suggested.steps),
        guidance_scale: args.guidance[0],
        eta: args.eta,
        width: args.width.unwrap_or(size),
        height: args.height.unwrap_or(size),
        scheduler: SamplerName::parse(&args.scheduler, &model.scheduler_config)?,
        img2img: None,
    };
    let mut main = Session::new(model, settings)?;
    if let Some(&k) = args.steps_shown.iter().find(|&&k| k == 0 || k > main.calls()) {
        bail!("--steps-shown {k}: expected steps 1 to {} (x0 exists after a step)", main.calls());
    }
    main.encode_prompt()?;
    main.get_latent()?;

    let mut rows = Vec::with_capacity(args.seeds.len());
    let mut n = 0;
    for &seed in &args.seeds {
        let mut row = Vec::with_capacity(args.guidance.len());
        for &guidance in &args.guidance {
            n += 1;
            let started = Instant::now();
            let first = n == 1;
            let name = format!("seed{seed}-cfg{guidance}");
            let mut cell = if first {
                None
            } else {
                Some(main.fork(
                    0,
                    None,
                    &Change { seed: Some(seed), guidance_scale: Some(guidance), ..Change::default() },
                )?)
            };
            let run = cell.as_mut().unwrap_or(&mut main);
            let strip = run_cell(run, &args.steps_shown)?;
            let (dir, address) = if first {
                (session_dir.clone(), args.session.clone())
            } else {
                let dir = store::session_dir(&session_dir.join(store::BRANCHES), &name)?;
                (dir, format!("{}/{name}", args.session))
            };
            run.save(&dir, SaveOptions { force: args.force || !first })?;
            eprintln!(
                "cell {n}/{cells}: seed {seed}, guidance {guidance}: {:.1} s, saved as {address}",
                started.elapsed().as_secs_f64()
            );
            row.push(strip);
        }
        rows.push(row);
    }
    let mut strip_labels: Vec<String> = args.steps_shown.iter().map(|k| format!("x0@{k}")).collect();
    if !strip_labels.is_empty() {
        strip_labels.push("final".into());
    }
    let sheet = Sheet {
        row_labels: args.seeds.iter().map(|s| format!("seed {s}")).collect(),
        column_labels: args.guidance.iter().map(|g| format!("cfg {g}")).collect(),
        strip_labels,
        cells: rows,
    }
    .render()?;
    write_atomic(&args.out, &encode_png(&sheet, &[])?)?;
    eprintln!("wrote {} ({}x{}, {cells} cells)", args.out.display(), sheet.width(), sheet.height());
    Ok(())
}

/// Runs a cell to the end: its x0 decoded after each of `steps_shown`, then its image.
fn run_cell(run: &mut Session, steps_shown: &[usize]) -> Result<Vec<image::RgbImage>> {
    let mut strip = Vec::with_capacity(steps_shown.len() + 1);
    for &k in steps_shown {
        run.run_to(k.max(run.history().len()))?;
        let x0 = run.history()[k - 1].denoise.scheduler.pred_original_sample().clone();
        strip.push(to_rgb8(&run.decode(&x0)?)?);
    }
    let calls = run.calls();
    run.run_to(calls)?;
    strip.push(to_rgb8(run.vae_decode()?)?);
    Ok(strip)
}
