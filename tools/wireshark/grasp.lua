-- GRASP (RFC 8990, the GeneRic Autonomic Signaling Protocol) for Wireshark.
--
-- Wireshark has no GRASP dissector; this plugin is one. It decodes UDP
-- port 7017 (link-local multicasts: M_DISCOVERY, M_FLOOD) and GRASP over
-- TCP on any port (found by a heuristic, then followed per conversation),
-- with messages split over segments or several in one segment. Every
-- message field, option and objective field is a filterable field
-- (grasp.type, grasp.session_id, grasp.objective.name, the flags bit by
-- bit, grasp.objective.loop_count, grasp.locator.*, grasp.ttl,
-- grasp.decline.reason, ...); objective values are shown through
-- Wireshark's CBOR dissector. Malformed input is flagged as expert info,
-- never a Lua error.
--
-- QUADS and TLS traffic is encrypted: `grasp decode --write-pcap OUT`
-- writes a capture with it decrypted, for this plugin.
--
-- Install: copy to ~/.local/lib/wireshark/plugins/ (or the system plugin
-- folder; the Debian package puts it there), or run
--   tshark -X lua_script:grasp.lua -r capture.pcap
--
-- Written by hand because Wireshark's CBOR dissector shows CBOR items, not
-- GRASP's fields; CBOR is parsed here only far enough to find them (Lua 5.2:
-- numbers are doubles, exact to 2^53, which every GRASP field fits).

local grasp = Proto("grasp", "GeneRic Autonomic Signaling Protocol")

local MESSAGES = {
    [0] = "M_NOOP", [1] = "M_DISCOVERY", [2] = "M_RESPONSE", [3] = "M_REQ_NEG",
    [4] = "M_REQ_SYN", [5] = "M_NEGOTIATE", [6] = "M_END", [7] = "M_WAIT",
    [8] = "M_SYNCH", [9] = "M_FLOOD", [99] = "M_INVALID",
}
local OPTIONS = {
    [100] = "O_DIVERT", [101] = "O_ACCEPT", [102] = "O_DECLINE",
    [103] = "O_IPv6_LOCATOR", [104] = "O_IPv4_LOCATOR", [105] = "O_FQDN_LOCATOR",
    [106] = "O_URI_LOCATOR", [107] = "O_COSE_SIGN",
}
local PROTOCOLS = { [6] = "TCP", [17] = "UDP" }
local PORT = 7017
-- Nesting and item-count bounds: a message deeper or longer than this is
-- malformed (GRASP messages are a few levels deep and at most 64 KiB).
local MAX_DEPTH = 32

local f = grasp.fields
f.type = ProtoField.uint8("grasp.type", "Message type", base.DEC, MESSAGES)
f.session_id = ProtoField.uint32("grasp.session_id", "Session ID", base.DEC_HEX)
f.initiator = ProtoField.ipv6("grasp.initiator", "Initiator")
f.initiator4 = ProtoField.ipv4("grasp.initiator4", "Initiator (IPv4)")
f.ttl = ProtoField.uint32("grasp.ttl", "TTL (ms)")
f.waiting_time = ProtoField.uint32("grasp.waiting_time", "Waiting time (ms)")
f.objective = ProtoField.none("grasp.objective", "Objective")
f.obj_name = ProtoField.string("grasp.objective.name", "Name")
f.obj_flags = ProtoField.uint8("grasp.objective.flags", "Flags", base.HEX)
f.flag_disc = ProtoField.bool("grasp.objective.flags.disc", "F_DISC", 8, nil, 0x01)
f.flag_neg = ProtoField.bool("grasp.objective.flags.neg", "F_NEG", 8, nil, 0x02)
f.flag_synch = ProtoField.bool("grasp.objective.flags.synch", "F_SYNCH", 8, nil, 0x04)
f.flag_dry = ProtoField.bool("grasp.objective.flags.neg_dry", "F_NEG_DRY", 8, nil, 0x08)
f.loop_count = ProtoField.uint8("grasp.objective.loop_count", "Loop count")
f.obj_value = ProtoField.bytes("grasp.objective.value", "Value (CBOR)")
f.tagged = ProtoField.none("grasp.tagged_objective", "Tagged objective")
f.option = ProtoField.uint8("grasp.option", "Option", base.DEC, OPTIONS)
f.loc_ipv6 = ProtoField.ipv6("grasp.locator.ipv6", "IPv6 address")
f.loc_ipv4 = ProtoField.ipv4("grasp.locator.ipv4", "IPv4 address")
f.loc_fqdn = ProtoField.string("grasp.locator.fqdn", "FQDN")
f.loc_uri = ProtoField.string("grasp.locator.uri", "URI")
f.loc_proto = ProtoField.uint8("grasp.locator.protocol", "Transport protocol", base.DEC, PROTOCOLS)
f.loc_port = ProtoField.uint16("grasp.locator.port", "Port")
f.no_locator = ProtoField.none("grasp.locator.none", "No locator")
f.decline_reason = ProtoField.string("grasp.decline.reason", "Decline reason")
f.signature = ProtoField.bytes("grasp.cose_sign", "COSE_Sign1 signature")
f.invalid = ProtoField.bytes("grasp.invalid.content", "M_INVALID content (CBOR)")
f.extra = ProtoField.bytes("grasp.extra", "Unexpected item (CBOR)")

local e_malformed = ProtoExpert.new("grasp.malformed", "Malformed GRASP message",
    expert.group.MALFORMED, expert.severity.ERROR)
local e_unknown = ProtoExpert.new("grasp.unknown", "Unknown GRASP message type or option",
    expert.group.UNDECODED, expert.severity.WARN)
local e_not_grasp = ProtoExpert.new("grasp.not_grasp",
    "Not a GRASP message (QUADS and TLS traffic is encrypted: see grasp decode --write-pcap)",
    expert.group.UNDECODED, expert.severity.NOTE)
local e_error = ProtoExpert.new("grasp.dissector_error", "GRASP dissector error",
    expert.group.MALFORMED, expert.severity.ERROR)
grasp.experts = { e_malformed, e_unknown, e_not_grasp, e_error }

local cbor = Dissector.get("cbor")

---------------------------------------------------------------------------
-- CBOR, as far as GRASP needs: item heads, lengths and nesting.

-- The head at `off` (within `len` bytes of `tvb`): major type, value
-- (argument, or nil for indefinite length), head length; or nil, why.
local function head(tvb, off, len)
    if off >= len then return nil, "short" end
    local b = tvb(off, 1):uint()
    local major, ai = math.floor(b / 32), b % 32
    if ai < 24 then return major, ai, 1 end
    local n = ({ [24] = 1, [25] = 2, [26] = 4, [27] = 8 })[ai]
    if n then
        if off + 1 + n > len then return nil, "short" end
        local v
        if n == 8 then
            local hi, lo = tvb(off + 1, 4):uint(), tvb(off + 5, 4):uint()
            v = hi * 4294967296 + lo
        else
            v = tvb(off + 1, n):uint()
        end
        return major, v, 1 + n
    end
    if ai == 31 and major >= 2 and major <= 5 then return major, nil, 1 end
    if ai == 31 and major == 7 then return 7, "break", 1 end
    return nil, "bad"
end

-- Parses the item at `off`: a table {major, value, off, len, items} with
-- `items` the children of arrays (maps: keys and values in turn), tags:
-- the tagged item; or nil, "short" (the bytes end inside it) / "bad".
local function item(tvb, off, len, depth)
    if depth > MAX_DEPTH then return nil, "bad" end
    local major, v, hl = head(tvb, off, len)
    if not major then return nil, v end
    if v == "break" then return nil, "bad" end
    local it = { major = major, value = v, off = off, hl = hl }
    local p = off + hl
    if major == 2 or major == 3 then
        if v == nil then -- indefinite: definite chunks until a break
            while true do
                if p >= len then return nil, "short" end
                if tvb(p, 1):uint() == 0xff then p = p + 1; break end
                local c, why = item(tvb, p, len, depth + 1)
                if not c then return nil, why end
                if c.major ~= major or c.value == nil then return nil, "bad" end
                p = p + c.len
            end
        else
            if p + v > len then return nil, "short" end
            p = p + v
        end
    elseif major == 4 or major == 5 then
        it.items = {}
        local count = v and (major == 5 and 2 * v or v)
        -- Each item takes at least a byte: a count beyond the bytes left
        -- is a lie (or the message continues in a later segment).
        if count and count > len - p then
            return nil, (count > 65536) and "bad" or "short"
        end
        local k = 0
        while (count == nil) or k < count do
            if count == nil then
                if p >= len then return nil, "short" end
                if tvb(p, 1):uint() == 0xff then p = p + 1; break end
            end
            local c, why = item(tvb, p, len, depth + 1)
            if not c then return nil, why end
            k = k + 1
            it.items[k] = c
            p = p + c.len
        end
        if count == nil and major == 5 and k % 2 == 1 then return nil, "bad" end
    elseif major == 6 then
        local c, why = item(tvb, p, len, depth + 1)
        if not c then return nil, why end
        it.items = { c }
        p = p + c.len
    elseif major == 7 and v == nil then
        return nil, "bad"
    end
    it.len = p - off
    return it
end

local function is_uint(it) return it and it.major == 0 end
local function text_of(tvb, it)
    if not it or it.major ~= 3 or it.value == nil then return nil end
    return tvb(it.off + it.hl, it.value):string(ENC_UTF_8)
end
local function bytes_range(tvb, it)
    if not it or it.major ~= 2 or it.value == nil then return nil end
    return tvb(it.off + it.hl, it.value)
end
local function range(tvb, it) return tvb(it.off, it.len) end

---------------------------------------------------------------------------
-- GRASP

local function bad(tree, tvb, it, why)
    tree:add_proto_expert_info(e_malformed, why)
    if it then tree:add(f.extra, range(tvb, it)) end
end

-- An unsigned integer up to `max` (its field's width) as `field`.
local function uint_field(tree, tvb, field, it, what, max)
    if is_uint(it) and it.value <= max then
        return tree:add(field, range(tvb, it), it.value)
    end
    bad(tree, tvb, it, what .. " is not an unsigned integer up to " .. string.format("%.0f", max))
end
local U32, U16, U8 = 4294967295, 65535, 255

local function objective(tree, tvb, pinfo, it)
    local t = tree:add(f.objective, range(tvb, it))
    if it.major ~= 4 or #it.items < 3 then
        bad(t, tvb, nil, "an objective is [name, flags, loop-count, ?value]")
        return nil
    end
    local name = text_of(tvb, it.items[1])
    if name then
        t:add(f.obj_name, range(tvb, it.items[1]), name)
        t:append_text(": " .. name)
    else
        bad(t, tvb, it.items[1], "an objective's name is text")
    end
    local fl = it.items[2]
    if is_uint(fl) and fl.value < 256 then
        local ft = t:add(f.obj_flags, range(tvb, fl), fl.value)
        for _, b in ipairs({ f.flag_disc, f.flag_neg, f.flag_synch, f.flag_dry }) do
            ft:add(b, range(tvb, fl), fl.value)
        end
    else
        bad(t, tvb, fl, "an objective's flags are an unsigned integer below 256")
    end
    local lc = it.items[3]
    if is_uint(lc) and lc.value < 256 then
        t:add(f.loop_count, range(tvb, lc), lc.value)
    else
        bad(t, tvb, lc, "a loop count is 0..255")
    end
    local v = it.items[4]
    if v then
        local vt = t:add(f.obj_value, range(tvb, v))
        if cbor then
            pcall(function() cbor:call(range(tvb, v):tvb(), pinfo, vt) end)
        end
    end
    for k = 5, #it.items do bad(t, tvb, it.items[k], "an objective has at most four items") end
    return name
end

local function locator(tree, tvb, opt)
    local code = opt.items[1].value
    local a, proto, port = opt.items[2], opt.items[3], opt.items[4]
    if code == 103 then
        local r = bytes_range(tvb, a)
        if r and r:len() == 16 then tree:add(f.loc_ipv6, r) else bad(tree, tvb, a, "an IPv6 locator holds 16 bytes") end
    elseif code == 104 then
        local r = bytes_range(tvb, a)
        if r and r:len() == 4 then tree:add(f.loc_ipv4, r) else bad(tree, tvb, a, "an IPv4 locator holds 4 bytes") end
    else
        local s = text_of(tvb, a)
        if s then
            tree:add(code == 105 and f.loc_fqdn or f.loc_uri, range(tvb, a), s)
        else
            bad(tree, tvb, a, "an FQDN or URI locator holds text")
        end
    end
    -- A URI locator may leave protocol and port null.
    local function opt_uint(field, it, what, max)
        if code == 106 and it and it.major == 7 and it.value == 22 then return end
        uint_field(tree, tvb, field, it, what, max)
    end
    opt_uint(f.loc_proto, proto, "a locator's protocol", U8)
    opt_uint(f.loc_port, port, "a locator's port", U16)
end

-- One option; `allowed` is the set of codes valid where it stands.
local function option(tree, tvb, it, allowed)
    if it.major ~= 4 or #it.items < 1 or not is_uint(it.items[1]) then
        bad(tree, tvb, it, "an option is [code, ...]")
        return
    end
    local code = it.items[1].value
    local t = tree:add(f.option, range(tvb, it), code)
    if not allowed[code] then
        t:add_proto_expert_info(e_unknown, "option " .. code .. " is not valid here")
        return
    end
    if code >= 103 and code <= 106 then
        if #it.items ~= 4 then bad(t, tvb, nil, "a locator option has four items"); return end
        locator(t, tvb, it)
    elseif code == 100 then
        if #it.items < 2 then bad(t, tvb, nil, "O_DIVERT holds one or more locators") end
        for k = 2, #it.items do option(t, tvb, it.items[k], { [103] = 1, [104] = 1, [105] = 1, [106] = 1 }) end
    elseif code == 102 then
        local r = it.items[2]
        if r then
            local s = text_of(tvb, r)
            if s then t:add(f.decline_reason, range(tvb, r), s) else bad(t, tvb, r, "a decline reason is text") end
        end
    elseif code == 107 then
        if it.items[2] then t:add(f.signature, range(tvb, it.items[2])) end
    end
end

local LOCATORS = { [103] = 1, [104] = 1, [105] = 1, [106] = 1 }
local RESPONSE_OPTIONS = { [100] = 1, [103] = 1, [104] = 1, [105] = 1, [106] = 1, [107] = 1 }
local END_OPTIONS = { [101] = 1, [102] = 1 }

local function initiator(tree, tvb, it)
    local r = bytes_range(tvb, it)
    if r and r:len() == 16 then tree:add(f.initiator, r)
    elseif r and r:len() == 4 then tree:add(f.initiator4, r)
    else bad(tree, tvb, it, "an initiator is an IPv6 or IPv4 address (16 or 4 bytes)") end
end

-- One whole message `m` (a parsed item) into `tree`; returns its summary.
local function message(tree, tvb, pinfo, m)
    local t = tree:add(grasp, range(tvb, m))
    if m.major ~= 4 or #m.items < 1 or not is_uint(m.items[1]) then
        bad(t, tvb, nil, "a GRASP message is an array starting with its type")
        return "malformed"
    end
    local it = m.items
    local ty = it[1].value
    t:add(f.type, range(tvb, it[1]), ty)
    local name = MESSAGES[ty]
    if not name then
        t:add_proto_expert_info(e_unknown, "message type " .. ty .. " is unassigned")
        name = "type " .. ty
    end
    t:append_text(", " .. name)
    if ty == 0 then
        if #it > 1 then bad(t, tvb, it[2], "M_NOOP is [0]") end
        return name
    end
    if not it[2] then bad(t, tvb, nil, name .. " has no session id"); return name end
    uint_field(t, tvb, f.session_id, it[2], "a session id", U32)
    local obj
    if ty == 1 then
        if #it ~= 4 then bad(t, tvb, nil, "M_DISCOVERY is [1, session-id, initiator, objective]") end
        if it[3] then initiator(t, tvb, it[3]) end
        if it[4] then obj = objective(t, tvb, pinfo, it[4]) end
    elseif ty == 2 then
        if #it < 5 then bad(t, tvb, nil, "M_RESPONSE is [2, session-id, initiator, ttl, locators or divert, ?objective]") end
        if it[3] then initiator(t, tvb, it[3]) end
        if it[4] then uint_field(t, tvb, f.ttl, it[4], "a ttl", U32) end
        for k = 5, #it do
            local x = it[k]
            if x.major == 4 and x.items[1] and x.items[1].major == 3 then
                obj = objective(t, tvb, pinfo, x)
            else
                option(t, tvb, x, RESPONSE_OPTIONS)
            end
        end
    elseif ty == 3 or ty == 4 or ty == 5 or ty == 8 then
        if #it ~= 3 then bad(t, tvb, nil, name .. " is [" .. ty .. ", session-id, objective]") end
        if it[3] then obj = objective(t, tvb, pinfo, it[3]) end
        for k = 4, #it do bad(t, tvb, it[k], "unexpected item") end
    elseif ty == 6 then
        if #it ~= 3 then bad(t, tvb, nil, "M_END is [6, session-id, accept or decline]") end
        if it[3] then option(t, tvb, it[3], END_OPTIONS) end
        for k = 4, #it do bad(t, tvb, it[k], "unexpected item") end
    elseif ty == 7 then
        if #it ~= 3 then bad(t, tvb, nil, "M_WAIT is [7, session-id, waiting-time]") end
        if it[3] then uint_field(t, tvb, f.waiting_time, it[3], "a waiting time", U32) end
    elseif ty == 9 then
        if #it < 5 then bad(t, tvb, nil, "M_FLOOD is [9, session-id, initiator, ttl, +[objective, locator or []]]") end
        if it[3] then initiator(t, tvb, it[3]) end
        if it[4] then uint_field(t, tvb, f.ttl, it[4], "a ttl", U32) end
        for k = 5, #it do
            local x = it[k]
            if x.major == 4 and #x.items == 2 then
                local tt = t:add(f.tagged, range(tvb, x))
                local n = objective(tt, tvb, pinfo, x.items[1])
                if n then tt:append_text(": " .. n); obj = obj or n end
                local l = x.items[2]
                if l.major == 4 and #l.items == 0 then
                    tt:add(f.no_locator, range(tvb, l))
                else
                    option(tt, tvb, l, LOCATORS)
                end
            elseif x.major == 4 and x.items[1] and is_uint(x.items[1]) and x.items[1].value == 107 then
                option(t, tvb, x, { [107] = 1 })
            else
                bad(t, tvb, x, "a flood carries [objective, locator or []] pairs")
            end
        end
    elseif ty == 99 then
        for k = 3, #it do t:add(f.invalid, range(tvb, it[k])) end
    end
    if obj then t:append_text(" " .. obj); return name .. " " .. obj end
    return name
end

-- Dissects every whole message from `off` on. Over TCP a message cut
-- short asks for the next segment; over UDP it is malformed.
local function dissect(tvb, pinfo, tree, tcp)
    local len = tvb:len()
    local off, names = 0, {}
    while off < len do
        local m, why = item(tvb, off, len, 0)
        if not m then
            if why == "short" and tcp then
                pinfo.desegment_offset = off
                pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
                off = len
                break
            end
            local t = tree:add(grasp, tvb(off, len - off))
            t:add_proto_expert_info(why == "short" and e_malformed or e_not_grasp,
                why == "short" and "the message ends early" or "not CBOR")
            names[#names + 1] = "malformed"
            off = len
            break
        end
        names[#names + 1] = message(tree, tvb, pinfo, m)
        off = off + m.len
        if not tcp and off < len then
            local t = tree:add(grasp, tvb(off, len - off))
            t:add_proto_expert_info(e_malformed, "bytes after the message")
            off = len
        end
    end
    if #names > 0 then
        pinfo.cols.protocol = "GRASP"
        pinfo.cols.info = table.concat(names, "; ")
    end
    return off
end

local function guarded(tvb, pinfo, tree, tcp)
    local ok, r = pcall(dissect, tvb, pinfo, tree, tcp)
    if ok then return r end
    local t = tree:add(grasp, tvb())
    t:add_proto_expert_info(e_error, tostring(r))
    return tvb:len()
end

function grasp.dissector(tvb, pinfo, tree)
    local tcp = pinfo.port_type == 2 -- PT_TCP
    return guarded(tvb, pinfo, tree, tcp)
end

-- GRASP over TCP on any port: a message's first bytes are an array head,
-- a known type and (but for M_NOOP) a session id. A segment too short to
-- show all three is taken when what it has fits (the rest follows).
local function looks_like_grasp(tvb)
    local len = tvb:len()
    if len < 1 then return false end
    local ok, r = pcall(function()
        local major, n, hl = head(tvb, 0, len)
        if major == nil and n == "short" then return true end
        if major ~= 4 or not n or n < 1 or n > 64 then return false end
        local tm, ty, thl = head(tvb, hl, len)
        if tm == nil and ty == "short" then return true end
        if tm ~= 0 or not MESSAGES[ty] then return false end
        if ty == 0 then return n == 1 end
        if n < 3 then return false end
        local sm, sv = head(tvb, hl + thl, len)
        if sm == nil and sv == "short" then return true end
        return sm == 0
    end)
    return ok and r
end

local function heuristic(tvb, pinfo, tree)
    if not looks_like_grasp(tvb) then return false end
    pinfo.conversation = grasp
    guarded(tvb, pinfo, tree, true)
    return true
end

DissectorTable.get("udp.port"):add(PORT, grasp)
DissectorTable.get("tcp.port"):add(PORT, grasp)
grasp:register_heuristic("tcp", heuristic)
