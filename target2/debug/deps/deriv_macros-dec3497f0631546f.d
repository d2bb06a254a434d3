/work/wt/issue10/target2/debug/deps/deriv_macros-dec3497f0631546f.d: macros/src/lib.rs macros/src/chain.rs macros/src/errors.rs macros/src/module.rs macros/src/network/mod.rs macros/src/network/codegen.rs macros/src/network/grad.rs macros/src/network/ir.rs macros/src/network/parse.rs macros/src/network/sizes.rs

/work/wt/issue10/target2/debug/deps/libderiv_macros-dec3497f0631546f.so: macros/src/lib.rs macros/src/chain.rs macros/src/errors.rs macros/src/module.rs macros/src/network/mod.rs macros/src/network/codegen.rs macros/src/network/grad.rs macros/src/network/ir.rs macros/src/network/parse.rs macros/src/network/sizes.rs

macros/src/lib.rs:
macros/src/chain.rs:
macros/src/errors.rs:
macros/src/module.rs:
macros/src/network/mod.rs:
macros/src/network/codegen.rs:
macros/src/network/grad.rs:
macros/src/network/ir.rs:
macros/src/network/parse.rs:
macros/src/network/sizes.rs:
