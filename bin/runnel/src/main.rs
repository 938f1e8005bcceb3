fn main() {
    println!("runnel: the broker binary is not built yet; the partition log (crates/log) is.");
}
