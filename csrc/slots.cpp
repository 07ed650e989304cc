// The host books of continuous batching (dmcmc_fast/serve.py): a running batch of N slots, each held by at
// most one "piece" (one sampler call on some chains of one request, `owner`), which slot holds which chain,
// how many network calls each piece has made, FIFO admission of arrivals into free slots, and the packed
// layout of one network call (rows in slot order).
// Everything here is host integers: nothing touches a tensor.
#include <algorithm>
#include <stdexcept>
#include <string>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "slots.h"

SlotBooks::SlotBooks(int64_t n_slots) : owner_(n_slots, -1), chain_(n_slots, -1) {
  if (n_slots < 1) throw std::invalid_argument("slots must be >= 1, got " + std::to_string(n_slots));
  free_ = n_slots;
}

std::vector<int64_t> SlotBooks::admit(int64_t owner, int64_t rows, int64_t chain0) {
  if (owner < 0) throw std::invalid_argument("owner must be >= 0");
  if (rows < 1) throw std::invalid_argument("rows must be >= 1, got " + std::to_string(rows));
  if (pieces_.count(owner)) throw std::invalid_argument("owner " + std::to_string(owner) + " already holds slots");
  std::vector<int64_t> got;
  if (rows > free_) return got;  // not enough room: nothing reserved
  for (int64_t s = 0; s < (int64_t)owner_.size() && (int64_t)got.size() < rows; ++s) {
    if (owner_[s] < 0) {
      owner_[s] = owner;
      chain_[s] = chain0 + (int64_t)got.size();
      got.push_back(s);
    }
  }
  free_ -= rows;
  pieces_[owner] = Piece{got, 0};
  return got;
}

int64_t SlotBooks::release(int64_t owner) {
  auto it = pieces_.find(owner);
  if (it == pieces_.end()) return 0;
  for (int64_t s : it->second.slots) {
    owner_[s] = -1;
    chain_[s] = -1;
  }
  int64_t n = (int64_t)it->second.slots.size();
  free_ += n;
  pieces_.erase(it);
  return n;
}

std::vector<int64_t> SlotBooks::slots_of(int64_t owner) const {
  auto it = pieces_.find(owner);
  return it == pieces_.end() ? std::vector<int64_t>{} : it->second.slots;
}

std::vector<int64_t> SlotBooks::grant(const std::vector<int64_t>& wants, const std::vector<bool>& splittable) const {
  if (wants.size() != splittable.size()) throw std::invalid_argument("wants and splittable must have one entry each");
  std::vector<int64_t> grants(wants.size(), 0);
  int64_t left = free_;
  for (size_t i = 0; i < wants.size() && left > 0; ++i) {
    if (wants[i] <= left) grants[i] = wants[i];
    else if (splittable[i]) grants[i] = left;  // a batch sampler's chains split anywhere (per-chain streams)
    else continue;                              // a piece that must run whole (DLG's chain group) waits; later ones may pass
    left -= grants[i];
  }
  return grants;
}

std::vector<int64_t> SlotBooks::record_call(const std::vector<int64_t>& owners, const std::vector<int64_t>& rows) {
  if (owners.size() != rows.size()) throw std::invalid_argument("owners and rows must have one entry each");
  std::vector<std::pair<int64_t, size_t>> order;  // (first slot, index): the packed batch is in slot order
  for (size_t i = 0; i < owners.size(); ++i) {
    auto it = pieces_.find(owners[i]);
    if (it == pieces_.end()) throw std::invalid_argument("owner " + std::to_string(owners[i]) + " holds no slots");
    if (rows[i] < 0 || rows[i] > (int64_t)it->second.slots.size())
      throw std::invalid_argument("owner " + std::to_string(owners[i]) + " called with " + std::to_string(rows[i]) +
                                  " rows but holds " + std::to_string(it->second.slots.size()) + " slots");
    it->second.calls += 1;
    order.emplace_back(it->second.slots.front(), i);
  }
  std::sort(order.begin(), order.end());
  std::vector<int64_t> offsets(owners.size());
  int64_t at = 0;
  for (auto& [slot, i] : order) {
    offsets[i] = at;
    at += rows[i];
  }
  return offsets;
}

int64_t SlotBooks::calls(int64_t owner) const {
  auto it = pieces_.find(owner);
  return it == pieces_.end() ? -1 : it->second.calls;
}

std::tuple<std::vector<int64_t>, std::vector<int64_t>, std::vector<int64_t>> SlotBooks::table() const {
  std::vector<int64_t> steps(owner_.size(), 0);
  for (size_t s = 0; s < owner_.size(); ++s)
    if (owner_[s] >= 0) steps[s] = pieces_.at(owner_[s]).calls;
  return {owner_, chain_, steps};
}
