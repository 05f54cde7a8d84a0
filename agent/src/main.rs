fn main() {
    println!("inferwatt-agent {}", env!("CARGO_PKG_VERSION"));
}
