# The README's commands. Every target builds with the committed Cargo.lock.
.PHONY: test lint fmt clippy template bench build

# The whole test suite: unit tests plus integration tests against DynamoDB Local and moto,
# which the test harness installs (into .local/) and starts itself.
test:
	cargo test --workspace --locked

lint: fmt clippy template

fmt:
	cargo fmt --all -- --check

clippy:
	cargo clippy --workspace --all-targets --locked -- -D warnings

template:
	bash .ci/lint-template

bench:
	cargo bench -p tally-shared --bench validate --locked

build:
	cargo build --workspace --release --locked
