fn main() {
    println!("inferwatt-collector {}", env!("CARGO_PKG_VERSION"));
}
