//! The SMS gateway binary.

fn main() {
    println!("sms-app: not wired yet");
}
