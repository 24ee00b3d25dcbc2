use super::*;

/// Groups `text`'s lines as the agent would with nothing but the rules:
/// each group's lines joined, trailing blank lines trimmed.
fn groups(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut open: Option<Event> = None;
    for line in text.split('\n') {
        if let Some(event) = open.as_mut() {
            if event.accepts(line) {
                let last = out.last_mut().expect("an open group");
                last.push('\n');
                last.push_str(line);
                continue;
            }
        }
        open = start(line);
        out.push(line.to_owned());
    }
    out.iter().map(|g| trim_event(g).to_owned()).collect()
}

const PYTHON_CHAINED: &str = "Traceback (most recent call last):
  File \"/w/app.py\", line 3, in load
    return cfg[\"model\"]
           ~~~^^^^^^^^^
KeyError: 'model'

During handling of the above exception, another exception occurred:

Traceback (most recent call last):
  File \"/w/app.py\", line 9, in <module>
    load()
ValueError: no model configured";

#[test]
fn a_chained_python_traceback_is_one_event_and_the_next_print_is_not() {
    let text = format!("about to load\n{PYTHON_CHAINED}\ncleanup done\n");
    let got = groups(&text);
    assert_eq!(got, ["about to load", PYTHON_CHAINED, "cleanup done", ""]);
    let cause = PYTHON_CHAINED.replace(
        "During handling of the above exception, another exception occurred:",
        "The above exception was the direct cause of the following exception:",
    );
    assert_eq!(groups(&cause), [cause.as_str()]);
}

#[test]
fn python_exception_groups_and_repeats_stay_inside() {
    let text = "  + Exception Group Traceback (most recent call last):
  |   File \"x.py\", line 1, in <module>
  | ExceptionGroup: eg (2 sub-exceptions)
  +-+---------------- 1 ----------------
    | ValueError: 1
    +------------------------------------
next";
    let got = groups(text);
    assert_eq!(got.len(), 2, "{got:#?}");
    assert!(got[0].ends_with("+------------------------------------"));
    let recursion = "Traceback (most recent call last):
  File \"r.py\", line 2, in f
    return f()
  [Previous line repeated 996 more times]
RecursionError: maximum recursion depth exceeded";
    assert_eq!(groups(recursion), [recursion]);
}

#[test]
fn a_blank_line_after_a_traceback_is_not_a_chain() {
    let text = "Traceback (most recent call last):\n  File \"a\", line 1\nE: x\n\nnext line";
    assert_eq!(
        groups(text),
        [
            "Traceback (most recent call last):\n  File \"a\", line 1\nE: x",
            "next line"
        ]
    );
}

const JVM: &str = "Exception in thread \"main\" java.lang.IllegalStateException: outer
\tat Main.wrap(Main.java:9)
\tat Main.main(Main.java:3)
Caused by: java.lang.ArithmeticException: / by zero
\tat Main.divide(Main.java:13)
\tat Main.wrap(Main.java:7)
\t... 1 more
\tSuppressed: java.lang.RuntimeException: closing
\t\tat Main.close(Main.java:20)";

#[test]
fn a_jvm_stack_trace_with_causes_is_one_event() {
    let text = format!("starting\n{JVM}\nbye");
    assert_eq!(groups(&text), ["starting", JVM, "bye"]);
    let printed = "java.lang.RuntimeException: boom\n\tat A.b(A.java:1)";
    assert_eq!(groups(printed), [printed]);
    assert!(start("java.lang.OutOfMemoryError: Java heap space").is_some());
    assert!(start("com.example.Thing: not a throwable").is_none());
    assert!(start("version 1.2.3: ok").is_none());
}

const GO: &str = "panic: runtime error: integer divide by zero
[signal SIGFPE: floating-point exception code=0x1 addr=0x45e3d4 pc=0x45e3d4]

goroutine 1 [running]:
main.divide(...)
\t/tmp/w/main.go:12
main.main()
\t/tmp/w/main.go:20 +0x1d

goroutine 6 [sleep]:
time.Sleep(0x3b9aca00)
\t/usr/lib/go/src/runtime/time.go:285 +0x10c
main.main.func1({0x4b2c1e?, 0x3})
\t/tmp/w/main.go:16 +0x25
created by main.main in goroutine 1
\t/tmp/w/main.go:15 +0x4b";

#[test]
fn a_go_panic_with_goroutines_is_one_event_without_exit_status() {
    let text = format!("working\n{GO}\nexit status 2\n");
    assert_eq!(groups(&text), ["working", GO, "exit status 2", ""]);
    let fatal = "fatal error: all goroutines are asleep - deadlock!\n\ngoroutine 1 [chan receive]:\nmain.main()\n\t/m.go:5 +0x2d";
    assert_eq!(groups(fatal), [fatal]);
}

const RUST: &str = "thread 'main' panicked at src/main.rs:4:5:
model weights missing
stack backtrace:
   0: rust_begin_unwind
             at /rustc/abc/library/std/src/panicking.rs:665:5
   1: core::panicking::panic_fmt
   2: panics::main
note: Some details are omitted, run with `RUST_BACKTRACE=full` for a verbose backtrace.";

#[test]
fn a_rust_panic_with_and_without_backtrace_is_one_event() {
    let text = format!("loading\n{RUST}\nafter");
    assert_eq!(groups(&text), ["loading", RUST, "after"]);
    let with_id = RUST.replace("'main' panicked", "'main' (4711) panicked");
    assert_eq!(groups(&with_id), [with_id.as_str()]);
    let short = "thread '<unnamed>' panicked at 'boom', src/lib.rs:1:1\nnote: run with `RUST_BACKTRACE=1` environment variable to display a backtrace";
    assert_eq!(groups(&format!("{short}\nnext")), [short, "next"]);
}

#[test]
fn a_second_rust_panic_without_note_swallows_a_bounded_message() {
    let mut text = String::from("thread 'w' panicked at a.rs:1:1:");
    for i in 0..100 {
        text.push_str(&format!("\nline {i}"));
    }
    let got = groups(&text);
    assert_eq!(got[0].lines().count(), 1 + RUST_MESSAGE_LINES as usize);
    assert_eq!(got.len(), 1 + 100 - RUST_MESSAGE_LINES as usize);
}

#[test]
fn ordinary_and_json_lines_start_nothing() {
    for line in [
        "",
        "INFO ready",
        "{\"msg\":\"Traceback (most recent call last):\"}",
        "  File \"x.py\", line 1",
        "\tat Main.main(Main.java:3)",
        "goroutine 1 [running]:",
        "thread 'main' started",
        "panic",
    ] {
        assert_eq!(start(line), None, "{line:?}");
    }
}

#[test]
fn every_event_is_an_error() {
    for line in [
        "Traceback (most recent call last):",
        "Exception in thread \"main\" java.lang.Error",
        "panic: x",
        "thread 'main' panicked at x.rs:1:1:",
    ] {
        assert_eq!(start(line).expect(line).level(), Level::Error);
    }
}

#[test]
fn hostile_lines_never_panic_the_rules() {
    let nasty = [
        "(",
        ")",
        "(((",
        "\u{0}",
        "goroutine :",
        "[",
        "]:",
        "a(b",
        "é(ü)",
        "\t",
        " ",
        "Caused by: ",
        "Traceback (most recent call last):",
        "...)",
        ":",
        ".",
        "..Error",
    ];
    for first in nasty {
        for second in nasty {
            if let Some(mut event) = start(first) {
                event.accepts(second);
            }
            let _ = start(second);
        }
    }
    assert_eq!(trim_event("\n\n  \n"), "");
    assert_eq!(trim_event("a\n \n"), "a");
    assert_eq!(trim_event(""), "");
}

#[test]
fn an_event_says_when_it_surely_goes_on_and_when_it_is_over() {
    let mut rust = start("thread 'main' panicked at a.rs:1:1:").unwrap();
    assert!(rust.expects_more() && !rust.is_over());
    assert!(rust.accepts("boom"));
    assert!(rust.accepts("stack backtrace:"));
    assert!(rust.expects_more());
    assert!(rust.accepts("note: Some details are omitted"));
    assert!(rust.is_over() && !rust.expects_more());
    assert!(!rust.accepts("   0: more"));
    let mut python = start("Traceback (most recent call last):").unwrap();
    assert!(python.expects_more());
    assert!(python.accepts("ValueError: x"));
    assert!(
        !python.expects_more() && !python.is_over(),
        "a chain may follow"
    );
    let go = start("panic: x").unwrap();
    assert!(!go.expects_more() && !go.is_over());
}
