// Shared helpers of the weft native addon: every failure becomes a JS Error with errno, code
// (e.g. 'EPERM') and a message saying what to do about it.
#pragma once

#include <napi.h>

#include <cstdint>
#include <string>

namespace weft {

// Builds the Error object: message "<what>: <strerror> (<CODE>)[; <hint>]", .errno, .code, .syscall.
Napi::Error ErrnoError(Napi::Env env, int err, const std::string& what, const std::string& hint = "");

// A generic, actionable hint for errno values every call can hit (permissions, missing kernel bits).
std::string CommonHint(int err);

// Reads a non-negative integer file descriptor argument; throws TypeError naming the argument.
int FdArg(const Napi::Value& v, const char* name);

std::string StringArg(const Napi::Value& v, const char* name);

void InitBpf(Napi::Env env, Napi::Object exports);
void InitNet(Napi::Env env, Napi::Object exports);

}  // namespace weft
