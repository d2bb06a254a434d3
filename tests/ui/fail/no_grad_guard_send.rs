// `NoGradGuard` turns recording off for the thread that made it: moving it to
// another thread (and dropping it there) must not compile.
fn main() {
    let guard = deriv::NoGradGuard::new();
    std::thread::spawn(move || drop(guard));
}
