// SlotBooks: the host books of continuous batching (csrc/slots.cpp; used by dmcmc_fast/serve.py).
#pragma once
#include <cstdint>
#include <tuple>
#include <unordered_map>
#include <vector>

class SlotBooks {
 public:
  explicit SlotBooks(int64_t n_slots);
  // Reserve `rows` free slots (lowest first) for piece `owner`, chains chain0.. in them. Empty when fewer are free.
  std::vector<int64_t> admit(int64_t owner, int64_t rows, int64_t chain0);
  int64_t release(int64_t owner);  // a finished (or failed, cancelled) piece gives its slots back: how many
  std::vector<int64_t> slots_of(int64_t owner) const;
  // FIFO admission: how many slots each waiting piece (in arrival order) gets now; a splittable one takes what
  // is free, a whole one (DLG's chain group) waits until it fits and lets later ones pass.
  std::vector<int64_t> grant(const std::vector<int64_t>& wants, const std::vector<bool>& splittable) const;
  // One packed network call: each owner's row offset in the batch (slot order); each owner's call count + 1.
  std::vector<int64_t> record_call(const std::vector<int64_t>& owners, const std::vector<int64_t>& rows);
  int64_t calls(int64_t owner) const;  // -1: holds no slots
  int64_t free_slots() const { return free_; }
  int64_t n_slots() const { return (int64_t)owner_.size(); }
  // per slot: (owner or -1, chain or -1, calls its owner made)
  std::tuple<std::vector<int64_t>, std::vector<int64_t>, std::vector<int64_t>> table() const;

 private:
  struct Piece {
    std::vector<int64_t> slots;
    int64_t calls;
  };
  std::vector<int64_t> owner_, chain_;
  std::unordered_map<int64_t, Piece> pieces_;
  int64_t free_;
};
