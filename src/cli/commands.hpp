// The rxcomm subcommands: each adds itself to the root app and returns what runs it.
#pragma once

#include "cli_common.hpp"

#include <CLI/CLI.hpp>

namespace rxcomm {

Command add_serve_command(CLI::App& app);
Command add_send_command(CLI::App& app);
Command add_pull_command(CLI::App& app);
Command add_watch_command(CLI::App& app);
Command add_health_command(CLI::App& app);
Command add_bench_command(CLI::App& app);
Command add_list_command(CLI::App& app);
Command add_stats_command(CLI::App& app);

}  // namespace rxcomm
