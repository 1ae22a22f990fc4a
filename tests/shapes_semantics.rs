//! What the built-in `shapes` model draws, judged by its pixels over ten seeds
//! per prompt, each judgement required in 8 seeds of 10: the background is the
//! named colour, the largest region of another colour is the named shape
//! colour, that region lies in the named half, and the colour word's
//! cross-attention peaks inside it. The judgements are those of
//! `models/shapes/evaluate.py`, which measures a model with diffusers and gets
//! the same counts.

use image::RgbImage;
use sdlab::image_out::to_rgb8;
use sdlab::model::{self, builtin, Progress, Runtime, StableDiffusion};
use sdlab::session::{Session, Settings};

/// `models/shapes/data.py`'s colours.
const PALETTE: [(&str, [u8; 3]); 8] = [
    ("red", [220, 30, 30]),
    ("green", [30, 170, 50]),
    ("blue", [30, 60, 220]),
    ("yellow", [240, 220, 30]),
    ("purple", [140, 40, 180]),
    ("orange", [245, 130, 20]),
    ("white", [245, 245, 245]),
    ("black", [15, 15, 15]),
];

const SEEDS: u64 = 10;
/// At least 8 seeds in 10 must be right, for every prompt and every required judgement.
const NEEDED: usize = 8;

/// Shape colour, shape, place (as data.py words it), background.
const CASES: [(&str, &str, &str, &str); 8] = [
    ("red", "circle", "left", "blue"),
    ("yellow", "star", "right", "purple"),
    ("blue", "square", "top", "white"),
    ("green", "triangle", "bottom", "orange"),
    ("white", "circle", "right", "black"),
    ("orange", "square", "left", "green"),
    ("purple", "circle", "top", "yellow"),
    ("black", "star", "bottom", "red"),
];

fn place_words(place: &str) -> &'static str {
    match place {
        "left" => "on the left",
        "right" => "on the right",
        "top" => "at the top",
        _ => "at the bottom",
    }
}

fn nearest_colour(pixel: [u8; 3]) -> usize {
    let distance = |c: [u8; 3]| (0..3).map(|i| (i32::from(pixel[i]) - i32::from(c[i])).pow(2)).sum::<i32>();
    (0..PALETTE.len()).min_by_key(|&i| distance(PALETTE[i].1)).expect("a palette")
}

/// Each pixel's nearest named colour, row-major.
fn classes(image: &RgbImage) -> Vec<usize> {
    image.pixels().map(|p| nearest_colour(p.0)).collect()
}

/// The commonest colour of the outer two pixels.
fn border_colour(c: &[usize], w: usize, h: usize) -> usize {
    let mut counts = [0usize; PALETTE.len()];
    for y in 0..h {
        for x in 0..w {
            if x < 2 || y < 2 || x >= w - 2 || y >= h - 2 {
                counts[c[y * w + x]] += 1;
            }
        }
    }
    (0..PALETTE.len()).max_by_key(|&i| counts[i]).expect("a palette")
}

/// The largest 4-connected region of one colour other than `background`: its
/// colour and its pixels (as indices).
fn largest_region(c: &[usize], w: usize, h: usize, background: usize) -> Option<(usize, Vec<usize>)> {
    let mut seen = vec![false; c.len()];
    let mut best: Option<(usize, Vec<usize>)> = None;
    for start in 0..c.len() {
        if seen[start] || c[start] == background {
            continue;
        }
        let colour = c[start];
        let (mut stack, mut pixels) = (vec![start], Vec::new());
        seen[start] = true;
        while let Some(i) = stack.pop() {
            pixels.push(i);
            let (x, y) = (i % w, i / w);
            let neighbours = [
                (x > 0).then(|| i - 1),
                (x + 1 < w).then(|| i + 1),
                (y > 0).then(|| i - w),
                (y + 1 < h).then(|| i + w),
            ];
            for n in neighbours.into_iter().flatten() {
                if !seen[n] && c[n] == colour {
                    seen[n] = true;
                    stack.push(n);
                }
            }
        }
        if best.as_ref().is_none_or(|(_, b)| pixels.len() > b.len()) {
            best = Some((colour, pixels));
        }
    }
    best
}

fn in_half(place: &str, pixels: &[usize], w: usize, h: usize) -> bool {
    let n = pixels.len() as f64;
    let cx = pixels.iter().map(|&i| (i % w) as f64).sum::<f64>() / n;
    let cy = pixels.iter().map(|&i| (i / w) as f64).sum::<f64>() / n;
    let (hw, hh) = (w as f64 / 2.0, h as f64 / 2.0);
    match place {
        "left" => cx < hw,
        "right" => cx >= hw,
        "top" => cy < hh,
        _ => cy >= hh,
    }
}

/// What one seed drew, judged.
#[derive(Default)]
struct Verdict {
    background: bool,
    colour: bool,
    place: bool,
    attention: bool,
}

fn judge(session: &mut Session, colour: &str, place: &str, background: &str) -> Verdict {
    let steps = session.settings().steps;
    session.set_record_taps(true);
    session.encode_prompt().unwrap();
    session.get_latent().unwrap();
    session.run_to(steps).unwrap();
    let image = to_rgb8(session.vae_decode().unwrap()).unwrap();
    let (w, h) = (image.width() as usize, image.height() as usize);
    let c = classes(&image);
    let bg = border_colour(&c, w, h);
    let mut verdict = Verdict { background: PALETTE[bg].0 == background, ..Verdict::default() };
    let Some((region_colour, pixels)) = largest_region(&c, w, h, bg) else { return verdict };
    verdict.colour = PALETTE[region_colour].0 == colour;
    verdict.place = in_half(place, &pixels, w, h);

    // The colour word's map, summed over the steps, at its peak.
    let tokens = &session.encoding().unwrap().prompt.tokens;
    let word = tokens.iter().position(|t| t.text == format!("{colour}</w>")).expect("the colour word is a token");
    let mut sum: Vec<f32> = Vec::new();
    let (mut mh, mut mw) = (0, 0);
    for record in session.history() {
        let maps = record.taps.as_ref().and_then(|t| t.attention.as_ref()).expect("attention maps are recorded");
        let map = maps.token(word).unwrap();
        sum.resize(map.len(), 0.0);
        sum.iter_mut().zip(map).for_each(|(s, v)| *s += v);
        (mh, mw) = (maps.height, maps.width);
    }
    let peak = (0..sum.len()).max_by(|&a, &b| sum[a].total_cmp(&sum[b])).unwrap();
    // The centre of the peak's latent pixel, in image pixels.
    let (px, py) = ((peak % mw) * w / mw + w / mw / 2, (peak / mw) * h / mh + h / mh / 2);
    verdict.attention = pixels.contains(&(py * w + px));
    verdict
}

fn shapes() -> StableDiffusion {
    let runtime = Runtime::select(None, None).unwrap();
    model::open(builtin::DEFAULT, None, runtime, &Progress::Quiet).unwrap()
}

#[test]
fn shapes_draws_what_the_prompt_names() {
    let suggested = builtin::SHAPES.suggested;
    let mut session = Session::new(shapes(), Settings::new("", 64)).unwrap();
    let mut failures = Vec::new();
    for (colour, shape, place, background) in CASES {
        let article = if background.starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" };
        let prompt = format!("a big {colour} {shape} {}, on {article} {background} background", place_words(place));
        let mut counts = [0usize; 4];
        for seed in 0..SEEDS {
            let settings = Settings {
                prompt: prompt.clone(),
                seed,
                steps: suggested.steps,
                guidance_scale: suggested.guidance,
                ..session.settings().clone()
            };
            session.update_settings(settings).unwrap();
            let v = judge(&mut session, colour, place, background);
            for (count, ok) in counts.iter_mut().zip([v.background, v.colour, v.place, v.attention]) {
                *count += usize::from(ok);
            }
        }
        let line = format!(
            "{prompt:70} background {}/{SEEDS} colour {}/{SEEDS} place {}/{SEEDS} attention {}/{SEEDS}",
            counts[0], counts[1], counts[2], counts[3]
        );
        println!("{line}");
        if counts.iter().any(|&n| n < NEEDED) {
            failures.push(line);
        }
    }
    assert!(failures.is_empty(), "fewer than {NEEDED} of {SEEDS} seeds right:\n{}", failures.join("\n"));
}

#[test]
fn the_judgements_read_a_drawn_picture() {
    // A blue picture with a red disc on the left and a smaller green one on the
    // right: what data.py draws for "a big red circle on the left ... blue background".
    let image = RgbImage::from_fn(64, 64, |x, y| {
        let d = |cx: i32, cy: i32| (x as i32 - cx).pow(2) + (y as i32 - cy).pow(2);
        image::Rgb(if d(16, 32) < 17 * 17 {
            [220, 30, 30]
        } else if d(48, 32) < 9 * 9 {
            [30, 170, 50]
        } else {
            [30, 60, 220]
        })
    });
    let c = classes(&image);
    let bg = border_colour(&c, 64, 64);
    assert_eq!(PALETTE[bg].0, "blue");
    let (colour, pixels) = largest_region(&c, 64, 64, bg).unwrap();
    assert_eq!(PALETTE[colour].0, "red");
    assert!(in_half("left", &pixels, 64, 64) && !in_half("right", &pixels, 64, 64));
    assert!(pixels.contains(&(32 * 64 + 16)) && !pixels.contains(&(32 * 64 + 48)));
}
