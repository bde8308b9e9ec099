//! The two official preprocessing paths against the reference fixtures' inputs.

use medsam2_core::transforms::{preprocess_rgb_u8, preprocess_video_frame_u8};
use medsam2_tools::fixture::{compare_abs, Fixture};

fn fixtures() -> Vec<Fixture> {
    let mut dirs = medsam2_tools::fixture::shared_fixture_dirs().unwrap_or_default();
    dirs.extend(medsam2_tools::fixture::committed_fixture_dirs().unwrap_or_default());
    if dirs.is_empty() {
        eprintln!("skipped: no fixture directories found");
    }
    dirs.into_iter()
        .map(|d| Fixture::open(d).expect("fixture opens"))
        .collect()
}

#[test]
fn image_predictor_pixels_match() {
    for mut f in fixtures() {
        if !f.has_part("image") {
            continue;
        }
        let s = f.json["model"]["image_size"].as_u64().unwrap() as usize;
        let raw = f
            .tensor(
                "image",
                f.json["image"]["tensors"]["raw_rgb"]
                    .as_str()
                    .unwrap()
                    .to_string()
                    .as_str(),
            )
            .unwrap();
        let (h, w, _) = raw.dims3().unwrap();
        let bytes = raw.flatten_all().unwrap().to_vec1::<u8>().unwrap();
        let got = preprocess_rgb_u8(&bytes, h, w, s).unwrap();
        let got =
            candle_core::Tensor::from_vec(got, (1, 3, s, s), &candle_core::Device::Cpu).unwrap();
        let name = f.json["image"]["tensors"]["pixels"]
            .as_str()
            .unwrap()
            .to_string();
        let want = f.f32("image", &name).unwrap();
        let c = compare_abs("pixels", &got, &want, 1e-5).unwrap();
        println!("{}: pixels max abs {:.3e}", f.name(), c.max_abs);
        assert!(c.ok, "{}: pixels differ by {}", f.name(), c.max_abs);
    }
}

#[test]
fn video_frames_match() {
    for mut f in fixtures() {
        if !f.has_part("video") {
            continue;
        }
        let s = f.json["model"]["image_size"].as_u64().unwrap() as usize;
        let v = f.json["video"].clone();
        let raw = f
            .tensor("video", v["tensors"]["raw_rgb"].as_str().unwrap())
            .unwrap();
        let frames = f
            .f32("video", v["tensors"]["frames"].as_str().unwrap())
            .unwrap();
        let (n, h, w, _) = raw.dims4().unwrap();
        for i in 0..n {
            let idx = v["raw_rgb_frames"][i].as_u64().unwrap() as usize;
            let bytes = raw
                .get(i)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<u8>()
                .unwrap();
            let got = preprocess_video_frame_u8(&bytes, h, w, s).unwrap();
            let got =
                candle_core::Tensor::from_vec(got, (3, s, s), &candle_core::Device::Cpu).unwrap();
            let c = compare_abs("frame", &got, &frames.get(idx).unwrap(), 1e-5).unwrap();
            println!("{}: frame {idx} max abs {:.3e}", f.name(), c.max_abs);
            assert!(c.ok, "{}: frame {idx} differs by {}", f.name(), c.max_abs);
        }
    }
}
