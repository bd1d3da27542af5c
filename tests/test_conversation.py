from gptlab.generation import GenerationSettings
from gptlab.prompts import Conversation, prompt_style
from gptlab.tokenizer import GPT2Tokenizer

TOK = GPT2Tokenizer()
ALPACA = prompt_style("alpaca")
SMOLLM_SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"  # in SmolLM2's template


def test_prompt_keeps_the_system_text_and_the_latest_turns_that_fit():
    conversation = Conversation(TOK, ALPACA, context_length=200, system="Be brief.")
    conversation.add("first question", "first answer")
    conversation.add("second question", "second answer")
    opening = TOK.encode("Be brief.\n\n")
    turns = [TOK.encode(ALPACA.turn(q)) + TOK.encode(a) + [TOK.eos_id] for q, a in conversation.turns]
    new = TOK.encode(ALPACA.prompt("third question"))
    assert conversation.prompt("third question", 10) == opening + turns[0] + turns[1] + new
    room_for_one = 200 - len(new) - len(opening) - len(turns[1])  # max_new_tokens that leave one turn
    assert conversation.prompt("third question", room_for_one) == opening + turns[1] + new
    assert conversation.prompt("third question", room_for_one + 1) == opening + new
    assert turns[0][-1] == TOK.eos_id  # a finished turn ends as in training


def test_answer_settings_add_end_of_text_and_the_style_stops_once():
    settings = ALPACA.answer_settings(GenerationSettings(stop_ids=(TOK.eos_id,), stop_strings=("END",)))
    assert settings.stopping_for(TOK).stop_ids == (TOK.eos_id,)
    assert GenerationSettings().stopping_for(TOK).stop_ids == (TOK.eos_id,)  # end-of-text is decided there
    assert GenerationSettings(end_of_text=False).stopping_for(TOK).stop_ids == ()
    assert settings.stop_strings == ("END", "###")


def test_a_chatml_conversation_is_smollm2s_own_chat_template():
    """Two turns and a new question, rendered by us and by the chat template inside SmolLM2's GGUF file."""
    from transformers import AutoTokenizer

    from gptlab.files import builtin_model_path
    from gptlab.tokenizer.bytelevel import gguf_tokenizer

    path = builtin_model_path("smollm2")
    reference = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    tokenizer = gguf_tokenizer({"type": "builtin", "name": "smollm2"})
    chatml = prompt_style("chatml", SMOLLM_SYSTEM)  # the named style that writes what SmolLM2's template writes
    turns = [("Hi!", "Hello! How can I help?"), ("Name a colour.", "Blue.")]
    for system in (None, "Answer in French."):
        conversation = Conversation(tokenizer, chatml, 8192, system)
        messages = [{"role": "system", "content": system}] if system else []
        for question, answer in turns:
            conversation.add(question, answer)
            messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        messages.append({"role": "user", "content": "And another?"})
        ours = tokenizer.decode(conversation.prompt("And another?", 100))
        assert ours == reference.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert chatml.prompt("Say hi.") == chatml.system(None) + chatml.turn("Say hi.")  # one-turn prompts as trained
