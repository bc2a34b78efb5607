// Pieces of uri.cc exposed for unit tests only; not part of the data layer's
// contract. Pure functions, thread-safe.
#ifndef FREEZETUNE_SERVER_DATA_URI_INTERNAL_H_
#define FREEZETUNE_SERVER_DATA_URI_INTERNAL_H_

#include <sys/socket.h>

#include <string_view>

#include "server/data/uri.h"

namespace freezetune::data::internal {

using ::freezetune::data::PathIsUnder;

// False for loopback, private (10/8, 172.16/12, 192.168/16, fc00::/7),
// link-local (169.254/16, fe80::/10), unspecified, CGNAT, multicast and
// reserved addresses, including IPv4 addresses embedded in IPv6 (mapped,
// compatible, NAT64, 6to4). `addr` is AF_INET or AF_INET6.
bool IsPublicAddress(const sockaddr* addr);

}  // namespace freezetune::data::internal

#endif  // FREEZETUNE_SERVER_DATA_URI_INTERNAL_H_
