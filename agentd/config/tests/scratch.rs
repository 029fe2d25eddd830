#[test]
fn scratch() {
    let path = std::env::var("CFG").unwrap();
    let opts = isthmus_config::LoadOptions::default();
    match isthmus_config::load_file(std::path::Path::new(&path), &opts) {
        Ok(l) => {
            println!("OK {:#?}", l.config);
            for w in l.warnings {
                println!("{w}\n");
            }
        }
        Err(r) => println!("{r}"),
    }
}
