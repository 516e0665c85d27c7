//! One integration-test binary. Scenarios run against every real backend: the
//! embedded engine always, DynamoDB Local when `DYNAMODB_LOCAL_ENDPOINT` names
//! it (`.ci/run` starts it and sets it). Without it those tests are listed as
//! ignored and a notice says so: nothing skips silently. The same goes for the
//! deployment package, tested when `./build.sh` has written it.

mod binary;
mod capacity_proxy;
mod cli;
mod dead_letters;
mod debug_level;
mod faults;
mod insights;
mod observability;
mod package;
mod property;
mod proxy;
mod runtime_api;
mod scenarios;
mod support;

use std::future::Future;
use std::process::ExitCode;

use libtest_mimic::{Arguments, Failed, Trial};

use consolidation_updater::config::WriteMode;
use support::{Backend, Server};

const DYNAMODB_LOCAL_ENDPOINT: &str = "DYNAMODB_LOCAL_ENDPOINT";
const MOTO_ENDPOINT: &str = "MOTO_ENDPOINT";

fn run(test: impl Future<Output = anyhow::Result<()>>) -> Result<(), Failed> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Failed::from(format!("runtime: {e}")))?;
    runtime
        .block_on(test)
        .map_err(|e| Failed::from(format!("{e:#}")))
}

/// The fuzz target's saved corpus, replayed as an ordinary test (fuzzing
/// itself needs a nightly compiler and is not part of CI).
fn replay_fuzz_corpus() -> Result<(), Failed> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fuzz/corpus/decode_record");
    let entries = std::fs::read_dir(dir).map_err(|e| Failed::from(format!("{dir}: {e}")))?;
    let mut replayed = 0;
    for entry in entries.flatten() {
        let bytes = std::fs::read(entry.path()).map_err(|e| Failed::from(e.to_string()))?;
        consolidation_updater::domain::exercise_decoders(&bytes);
        replayed += 1;
    }
    if replayed < 4 {
        return Err(Failed::from(format!("only {replayed} inputs in {dir}")));
    }
    eprintln!("fuzz corpus: {replayed} inputs replayed without a panic");
    Ok(())
}

fn main() -> ExitCode {
    let args = Arguments::from_args();
    let dynamodb_local = std::env::var(DYNAMODB_LOCAL_ENDPOINT)
        .ok()
        .filter(|e| !e.is_empty());
    let moto = std::env::var(MOTO_ENDPOINT).ok().filter(|e| !e.is_empty());
    let package = package::package_path();
    let package_missing = package.is_none();
    let notice = [
        match &dynamodb_local {
            Some(endpoint) => format!("DynamoDB Local suite: running against {endpoint}"),
            None => format!(
                "DynamoDB Local suite: NOT RUN ({DYNAMODB_LOCAL_ENDPOINT} is not set; its tests are \
                 listed as ignored). `.ci/run` starts DynamoDB Local and runs it."
            ),
        },
        match &moto {
            Some(endpoint) => format!("SQS/SNS suite: running against moto at {endpoint}"),
            None => format!(
                "SQS/SNS suite: NOT RUN ({MOTO_ENDPOINT} is not set; its tests are listed as \
                 ignored). `.ci/run` starts moto's server and runs it."
            ),
        },
        match &package {
            Some(zip) => format!("Deployment package: testing {}", zip.display()),
            None => format!(
                "Deployment package: NOT TESTED (no consolidation-updater.zip at the repository \
                 root and {} is not set; its test is listed as ignored). `.ci/run` builds it \
                 with ./build.sh and tests it.",
                package::PACKAGE_ZIP
            ),
        },
    ]
    .join("\n");
    eprintln!("{notice}");

    let mut trials = Vec::new();
    // Every scenario on both servers, with both write paths; each name says
    // its write path, so neither reads as the default.
    for (name, scenario) in scenarios::ALL {
        let scenario = *scenario;
        let name = name.rsplit("::").next().unwrap_or(name).trim();
        for (mode, write_mode) in [
            ("update_item", WriteMode::UpdateItem),
            ("batch_statement", WriteMode::BatchStatement),
        ] {
            trials.push(Trial::test(
                format!("embedded::{mode}::{name}"),
                move || run(scenario(Backend::embedded().writing_with(write_mode))),
            ));
            let backend = dynamodb_local.clone().map(|endpoint| Backend {
                server: Server::DynamoDbLocal(endpoint),
                write_mode,
            });
            let ignored = backend.is_none();
            trials.push(
                Trial::test(
                    format!("dynamodb_local::{mode}::{name}"),
                    move || match backend {
                        Some(backend) => run(scenario(backend)),
                        None => Err(Failed::from(format!(
                            "{DYNAMODB_LOCAL_ENDPOINT} is not set"
                        ))),
                    },
                )
                .with_ignored_flag(ignored),
            );
        }
    }
    // A minute of per-statement throttling, on the official server only: long,
    // so once, in the default write mode.
    {
        let backend = dynamodb_local.clone().map(|endpoint| Backend {
            server: Server::DynamoDbLocal(endpoint),
            write_mode: WriteMode::BatchStatement,
        });
        let ignored = backend.is_none();
        trials.push(
            Trial::test(
                "dynamodb_local::batch_statement::a_minute_of_throttling_never_hands_the_message_back",
                move || match backend {
                    Some(backend) => run(faults::a_minute_of_throttling_never_hands_the_message_back(backend)),
                    None => Err(Failed::from(format!("{DYNAMODB_LOCAL_ENDPOINT} is not set"))),
                },
            )
            .with_ignored_flag(ignored),
        );
    }
    macro_rules! moto_tests {
        ($($name:ident),* $(,)?) => {
            $(
                let endpoint = moto.clone();
                trials.push(
                    Trial::test(concat!("moto::", stringify!($name)), move || match endpoint {
                        Some(endpoint) => run(dead_letters::$name(endpoint)),
                        None => Err(Failed::from(format!("{MOTO_ENDPOINT} is not set"))),
                    })
                    .with_ignored_flag(moto.is_none()),
                );
            )*
        };
    }
    moto_tests![
        every_kind_of_poison_is_dead_lettered_with_its_payload,
        a_value_too_large_for_the_queue_is_dead_lettered_truncated,
        one_failure_notification_is_published_per_invocation,
        redrive_replays_what_now_decodes_and_leaves_the_rest,
        a_fifo_queue_parks_each_partitions_poison_in_order_and_once,
        a_fifo_failure_topic_gets_one_notice_per_invocation,
        redrive_of_a_fifo_queue_stops_each_partition_at_its_first_failure,
        at_debug_level_the_queues_limit_and_each_dead_letter_send_are_logged,
    ];
    // The proxy as a capacity-limited table: its logic alone, then through
    // the SDK on each server.
    macro_rules! capacity_logic_tests {
        ($($name:ident),* $(,)?) => {
            $(trials.push(Trial::test(concat!("capacity_proxy::", stringify!($name)), || {
                capacity_proxy::$name().map_err(|e| Failed::from(format!("{e:#}")))
            }));)*
        };
    }
    capacity_logic_tests![
        a_bucket_holds_one_second_of_writes_and_at_least_a_batch,
        a_batch_gets_as_many_statements_as_whole_tokens,
        tokens_come_back_at_the_rate_and_never_beyond_a_full_bucket,
        without_capacity_every_write_is_admitted_and_counted,
        a_greedy_client_reaches_the_rate_once_the_burst_is_discounted,
        a_split_batch_keeps_its_other_fields_and_its_first_statements,
        the_merged_answer_keeps_the_order_and_consumed_capacity_and_throttles_the_rest,
        a_refused_update_names_its_table_in_the_throttling_reasons,
    ];
    macro_rules! capacity_server_tests {
        ($($name:ident),* $(,)?) => {
            $(
                trials.push(Trial::test(
                    concat!("capacity_proxy::embedded::", stringify!($name)),
                    || run(capacity_proxy::$name(Backend::embedded())),
                ));
                let backend = dynamodb_local.clone().map(|endpoint| Backend {
                    server: Server::DynamoDbLocal(endpoint),
                    write_mode: WriteMode::BatchStatement,
                });
                let ignored = backend.is_none();
                trials.push(
                    Trial::test(
                        concat!("capacity_proxy::dynamodb_local::", stringify!($name)),
                        move || match backend {
                            Some(backend) => run(capacity_proxy::$name(backend)),
                            None => Err(Failed::from(format!(
                                "{DYNAMODB_LOCAL_ENDPOINT} is not set"
                            ))),
                        },
                    )
                    .with_ignored_flag(ignored),
                );
            )*
        };
    }
    capacity_server_tests![
        a_batch_beyond_the_tokens_applies_the_first_ones_and_throttles_the_rest_per_statement,
        an_update_beyond_capacity_is_refused_with_throttling_reasons_the_sdk_parses,
        fault_throttling_refuses_each_statement_of_the_chosen_batch,
    ];
    // About the proxy's timing, not the server: on the engine fast enough to
    // outrun the rate (DynamoDB Local, cold, writes one item slower).
    trials.push(Trial::test(
        "capacity_proxy::embedded::greedy_writers_are_held_to_the_capacity_once_the_burst_is_spent",
        || {
            run(
                capacity_proxy::greedy_writers_are_held_to_the_capacity_once_the_burst_is_spent(
                    Backend::embedded(),
                ),
            )
        },
    ));
    trials.push(Trial::test(
        "fuzz_corpus::every_saved_input_decodes_without_panicking",
        replay_fuzz_corpus,
    ));
    trials.push(Trial::test(
        "faults::a_permanently_rejected_update_dead_letters_its_message",
        || run(faults::a_permanently_rejected_update_dead_letters_its_message()),
    ));
    trials.push(Trial::test(
        "faults::a_missing_table_hands_every_message_back",
        || run(faults::a_missing_table_hands_every_message_back()),
    ));
    trials.push(Trial::test(
        "property::deliveries_with_faults_end_as_if_each_event_applied_once_in_order",
        || run(property::deliveries_with_faults_end_as_if_each_event_applied_once_in_order()),
    ));
    trials.push(Trial::test(
        "dead_letters::a_poison_message_is_handed_back_when_the_queue_is_unreachable",
        || run(dead_letters::a_poison_message_is_handed_back_when_the_queue_is_unreachable()),
    ));
    trials.push(Trial::test(
        "dead_letters::a_queue_whose_attributes_cannot_be_read_is_known_fifo_by_its_name",
        || run(dead_letters::a_queue_whose_attributes_cannot_be_read_is_known_fifo_by_its_name()),
    ));
    {
        let endpoint = moto.clone();
        trials.push(
            Trial::test(
                "moto::insights::the_dead_letter_query_finds_each_parked_message",
                move || match endpoint {
                    Some(endpoint) => run(
                        insights::the_dead_letter_query_finds_each_parked_message(endpoint),
                    ),
                    None => Err(Failed::from(format!("{MOTO_ENDPOINT} is not set"))),
                },
            )
            .with_ignored_flag(moto.is_none()),
        );
    }
    trials.push(Trial::test(
        "insights::runbook_queries_count_what_the_binary_logged",
        || run(insights::runbook_queries_count_what_the_binary_logged()),
    ));
    macro_rules! observability_tests {
        ($($name:ident),* $(,)?) => {
            $(trials.push(Trial::test(concat!("observability::", stringify!($name)), || run(observability::$name())));)*
        };
    }
    observability_tests![
        metrics_follow_the_emf_specification_and_agree_with_the_metrics_line,
        subsegments_continue_lambdas_trace_one_per_message_fan_out_and_page,
        nothing_is_traced_when_lambda_does_not_sample,
        a_messages_story_is_found_by_its_correlation_id,
        throttled_requests_are_counted_in_the_metrics,
    ];
    {
        let endpoint = moto.clone();
        trials.push(
            Trial::test(
                "moto::observability::dead_letter_and_notice_calls_are_traced_and_counted",
                move || match endpoint {
                    Some(endpoint) => run(
                        observability::dead_letter_and_notice_calls_are_traced_and_counted(
                            endpoint,
                        ),
                    ),
                    None => Err(Failed::from(format!("{MOTO_ENDPOINT} is not set"))),
                },
            )
            .with_ignored_flag(moto.is_none()),
        );
    }
    macro_rules! debug_level_tests {
        ($($name:ident),* $(,)?) => {
            $(trials.push(Trial::test(concat!("debug_level::", stringify!($name)), || run(debug_level::$name())));)*
        };
    }
    debug_level_tests![
        debug_grows_with_pages_and_trace_with_records_while_info_stays_the_same,
        under_throttling_retry_and_rate_lines_stay_bounded_and_count_every_retry,
        each_debug_and_trace_event_appears_when_its_situation_occurs,
        the_demo_shows_the_engines_expected_client_errors_only_at_trace,
    ];
    macro_rules! binary_tests {
        ($($name:ident),* $(,)?) => {
            $(trials.push(Trial::test(concat!("binary::", stringify!($name)), || run(binary::$name())));)*
        };
    }
    binary_tests![
        the_runtime_polls_handles_a_kafka_event_and_posts_the_response,
        a_table_without_the_date_index_is_warned_about_once_at_cold_start,
        a_payload_that_is_not_a_kafka_event_fails_the_invocation,
        every_event_source_fixture_is_stamped_by_the_runtime,
        an_invalid_setting_is_reported_to_the_init_error_endpoint,
        cold_start_is_measured_to_the_first_poll,
        the_invoke_command_prints_the_response_and_logs_to_stderr,
        an_unreachable_dynamodb_hands_every_message_back,
        backfill_stamps_a_day_by_hand_and_force_never_regresses_a_newer_execution,
    ];

    macro_rules! cli_tests {
        ($($name:ident),* $(,)?) => {
            $(trials.push(Trial::test(concat!("cli::", stringify!($name)), || run(cli::$name())));)*
        };
    }
    cli_tests![
        the_help_lists_the_exit_codes_and_one_default_per_option,
        a_count_that_is_not_positive_is_refused_as_such,
        every_invalid_setting_is_named_at_once,
        invoke_exits_3_when_a_message_is_handed_back_and_says_why,
        the_demo_reports_a_small_day_truthfully,
    ];
    let endpoint = moto.clone();
    trials.push(
        Trial::test(
            "moto::cli::redrive_exits_3_while_messages_still_fail",
            move || match endpoint {
                Some(endpoint) => run(cli::redrive_exits_3_while_messages_still_fail(endpoint)),
                None => Err(Failed::from(format!("{MOTO_ENDPOINT} is not set"))),
            },
        )
        .with_ignored_flag(moto.is_none()),
    );
    trials.push(Trial::test(
        "cli::embedded::create_table_makes_the_contract_and_can_run_again",
        || {
            run(cli::create_table_makes_the_contract_and_can_run_again(
                Backend::embedded(),
            ))
        },
    ));
    let backend = dynamodb_local.clone().map(|endpoint| Backend {
        server: Server::DynamoDbLocal(endpoint),
        write_mode: WriteMode::BatchStatement,
    });
    trials.push(
        Trial::test(
            "cli::dynamodb_local::create_table_makes_the_contract_and_can_run_again",
            move || match backend {
                Some(backend) => run(cli::create_table_makes_the_contract_and_can_run_again(
                    backend,
                )),
                None => Err(Failed::from(format!(
                    "{DYNAMODB_LOCAL_ENDPOINT} is not set"
                ))),
            },
        )
        .with_ignored_flag(dynamodb_local.is_none()),
    );

    trials.push(
        Trial::test(
            "package::the_packaged_bootstrap_polls_handles_a_kafka_event_and_posts_the_response",
            move || match package {
                Some(zip) => run(
                    package::the_packaged_bootstrap_polls_handles_a_kafka_event_and_posts_the_response(zip),
                ),
                None => Err(Failed::from("no deployment package: run ./build.sh")),
            },
        )
        .with_ignored_flag(package_missing),
    );

    let conclusion = libtest_mimic::run(&args, trials);
    eprintln!("{notice}");
    conclusion.exit_code()
}
