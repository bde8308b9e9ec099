//! Parses YAML configs given on the command line and compares them with a preset.
use medsam2_core::config::Sam2Config;
fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        let mut cfg = match Sam2Config::from_yaml_with_overrides(&std::fs::read_to_string(&pair[0]).unwrap(), &[
            "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
            "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
            "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
        ]) { Ok(c) => c, Err(e) => { println!("{}: ERROR {e}", pair[0]); continue } };
        if pair.len() > 1 {
            let p = Sam2Config::preset_by_name(&pair[1]).unwrap();
            if cfg.image_size != p.image_size { cfg = cfg.with_image_size(p.image_size).unwrap(); }
            if cfg == p { println!("{}: == preset {}", pair[0], pair[1]); } else { println!("{}: DIFFERS from {}\n{:#?}\n{:#?}", pair[0], pair[1], cfg, p); }
        } else { println!("{}: ok {}", pair[0], medsam2_core::config::describe(&cfg)); }
    }
}
