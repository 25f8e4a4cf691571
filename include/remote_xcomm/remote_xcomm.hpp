// Remote XComm: scheduler-to-task messaging over gRPC, on one Asio event loop.
#pragma once

#include <remote_xcomm/blocking.hpp>
#include <remote_xcomm/client.hpp>
#include <remote_xcomm/endpoint.hpp>
#include <remote_xcomm/error.hpp>
#include <remote_xcomm/fan_out.hpp>
#include <remote_xcomm/log.hpp>
#include <remote_xcomm/loop.hpp>
#include <remote_xcomm/request.hpp>
#include <remote_xcomm/security.hpp>
#include <remote_xcomm/server.hpp>
#include <remote_xcomm/stats.hpp>
#include <remote_xcomm/task_instance_key.hpp>
#include <remote_xcomm/watch.hpp>
#include <remote_xcomm/xcom.hpp>
