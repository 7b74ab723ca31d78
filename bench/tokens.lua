-- bench/tokens.lua: wrk script that sends N distinct tokens in rotation.
--
--   wrk -t2 -c32 -d10s -s bench/tokens.lua http://127.0.0.1:PORT/ -- TOKENS_FILE THREADS
--
-- TOKENS_FILE holds one token per line (bench/tokens writes it); THREADS is
-- wrk's -t. The file is cut into THREADS contiguous blocks and thread t
-- sends the tokens of block t in order, round and round (one request each
-- as "Authorization: Bearer <token>"). So the N tokens are all in use, no
-- two threads send the same one, and a token comes back after about N
-- requests in total: the cache sees N distinct tokens in a steady cycle.
-- Requests are formatted once, in init, so a request costs wrk no more
-- than an index.

local next_id = 0

-- setup runs in wrk's main Lua state once per thread, before init: it
-- numbers the threads.
function setup(thread)
   thread:set("thread_id", next_id)
   next_id = next_id + 1
end

local requests = {}
local count = 0
local i = 0

function init(args)
   local file, threads = args[1], tonumber(args[2])
   if file == nil or threads == nil or threads < 1 then
      error("usage: wrk ... -s tokens.lua URL -- TOKENS_FILE THREADS")
   end
   local total = 0
   for _ in io.lines(file) do total = total + 1 end
   if total < threads then
      error(file .. ": " .. total .. " tokens for " .. threads .. " threads")
   end
   local id = thread_id or 0
   local first = math.floor(total * id / threads) + 1
   local last = math.floor(total * (id + 1) / threads)
   local n = 0
   for tok in io.lines(file) do
      n = n + 1
      if n >= first and n <= last then
         count = count + 1
         requests[count] = wrk.format(nil, nil, { ["Authorization"] = "Bearer " .. tok })
      end
   end
end

function request()
   i = i + 1
   if i > count then i = 1 end
   return requests[i]
end
