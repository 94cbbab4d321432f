// Collective agreement on the host side: every rank reaches the same point with its own
// verdict, and either all go on or all throw the same error. This keeps a failure on one rank
// (a file it cannot write, an option only it read wrong) from leaving the others waiting in
// the next collective. Used by the checkpoint protocol, the trainer and the sampler.
#pragma once

#include <mpi.h>

#include <optional>
#include <string>

#include "core/base/error.h"

namespace diffusion {

// Every rank calls this at the same point with its own error text ("" for success). If any
// rank failed, every rank throws the same error "WHAT failed on rank R (and N other ranks) of
// W: MESSAGE", naming the lowest failing rank; with an empty WHAT and every rank failing (an
// error all ranks found alike, such as a bad option) just MESSAGE. It is an AgreedError when `comm`
// spans the whole job (see core/base/error.h), else a plain Error. Doubles as a barrier.
void agree_or_throw(MPI_Comm comm, const std::string& local_error, const std::string& what);

// Runs `body`, turning any exception into error text for agree_or_throw ("" when it returns).
template <typename Body>
std::string capture_error(Body&& body) {
  try {
    body();
    return {};
  } catch (const std::exception& e) {
    std::string text = e.what();
    return text.empty() ? std::string("unknown error") : text;
  }
}

// body() on every rank, its failure on any rank agreed as above; returns body's value.
template <typename Body>
auto agreed(MPI_Comm comm, const std::string& what, Body&& body) -> decltype(body()) {
  std::optional<decltype(body())> value;
  agree_or_throw(comm, capture_error([&] { value.emplace(body()); }), what);
  return std::move(*value);
}

// `text` of rank `root`, on every rank.
std::string broadcast_string(MPI_Comm comm, std::string text, int root = 0);

}  // namespace diffusion
